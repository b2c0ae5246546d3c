"""Seconds per denoising step of the full-size (14B) FantasyTalking transformer, random weights.

One step is the release's three guided passes (full, no audio, negative prompt) at 512x512, 81
frames (21 latent frames of 64x64 -> 21,504 visual tokens), bf16, frame-level audio windows.
Records seconds per step, peak GPU memory, the device and the date to
``benchmarks/results/bench_14b_step-<device>-<date>.json``.

Run on a GPU with at least ~40 GB free (the transformer alone is 32.8 GB in bf16)::

    python benchmarks/bench_14b_step.py --steps 3 --warmup 1
    python benchmarks/bench_14b_step.py --backend flash   # text/image with flash-attn, audio falls back
    python benchmarks/bench_14b_step.py --batch-passes    # the three passes as one batch of 3

Without a GPU it runs a scaled-down copy (``--layers``) only to check the script, and says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from variants import commit  # one record convention for every benchmark

from fantasytalking.conditioning import frame_windows, gather_windows
from fantasytalking.models import BranchInput, FantasyTalkingTransformer

# Wan2.1-I2V-14B (FANTASYTALKING.md section 2) and the release's audio sizes (section 3).
WAN_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
)
AUDIO_IN_DIM, AUDIO_PROJ_DIM, TEXT_LEN, IMAGE_TOKENS = 768, 2048, 512, 257
VAE_SPATIAL, VAE_TEMPORAL, WAV2VEC_TOKENS_PER_S = 8, 4, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--fps", type=int, default=23)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--layers", type=int, default=None, help="fewer blocks (CPU smoke test only)")
    parser.add_argument("--backend", default=None, help="diffusers attention backend (native, flash, sage, ...)")
    parser.add_argument("--batch-passes", action="store_true", help="the three passes as one batch of 3")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    config = dict(WAN_14B)
    size, frames = args.size, args.frames
    if not cuda:
        # Script check only: 2 blocks, narrow, small video.
        config.update(num_layers=args.layers or 2, num_attention_heads=2, attention_head_dim=64, ffn_dim=256,
                      text_dim=64, image_dim=32, added_kv_proj_dim=128)
        size, frames = 64, 17
    elif args.layers:
        config["num_layers"] = args.layers

    with torch.device("meta"):
        model = FantasyTalkingTransformer.from_config(config, audio_dim=AUDIO_PROJ_DIM, text_len=TEXT_LEN)
    model.to_empty(device=device)
    with torch.no_grad():  # random weights, small enough to keep activations finite
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.to(dtype).eval().requires_grad_(False)
    if args.backend:
        model.set_attention_backend(args.backend)
    params = sum(p.numel() for p in model.parameters())

    latent_frames = (frames - 1) // VAE_TEMPORAL + 1
    side = size // VAE_SPATIAL
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, config["in_channels"], latent_frames, side, side, device=device, dtype=dtype, generator=g)
    text = torch.randn(2, TEXT_LEN, config["text_dim"], device=device, dtype=dtype, generator=g)
    image = torch.randn(1, IMAGE_TOKENS, config["image_dim"], device=device, dtype=dtype, generator=g)
    tokens = int(frames / args.fps * WAV2VEC_TOKENS_PER_S)
    windows, lengths = gather_windows(
        torch.randn(1, tokens, AUDIO_PROJ_DIM, device=device, dtype=dtype, generator=g), frame_windows(tokens, frames)
    )
    audio_on = {"audio": BranchInput(windows, lengths, 1.0)}
    t = torch.tensor([900.0], device=device, dtype=dtype)

    # Batched: rows (full, no audio, negative prompt); the audio branch is on for the first row only.
    x3, t3, image3 = x.expand(3, -1, -1, -1, -1), t.expand(3), image.expand(3, -1, -1)
    text3 = torch.cat([text[:1], text[:1], text[1:]])
    audio3 = {"audio": BranchInput(windows.expand(3, -1, -1, -1), lengths,
                                   torch.tensor([1.0, 0.0, 0.0], device=device))}

    def step() -> None:
        with torch.no_grad():
            if args.batch_passes:
                model(x3, t3, text3, image3, branches=audio3)
                return
            model(x, t, text[:1], image, branches=audio_on)  # full
            model(x, t, text[:1], image)  # no audio
            model(x, t, text[1:], image)  # negative prompt

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)

    record = {
        "benchmark": "bench_14b_step",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "full_size": cuda and not args.layers,
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "backend": args.backend or "default",
        "params": params,
        "video": {"size": size, "frames": frames, "latent_frames": latent_frames,
                  "visual_tokens": latent_frames * (side // 2) ** 2, "audio_tokens": tokens,
                  "audio_window": windows.shape[2]},
        "passes_per_step": 3,
        "batch_passes": args.batch_passes,
        "seconds_per_step": sum(times) / len(times),
        "seconds_per_step_all": times,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tag = ("gpu" if cuda else "cpu-smoke") + ("-batched" if args.batch_passes else "")
    path = args.out / f"bench_14b_step-{tag}-{record['date'][:10]}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if not record["full_size"]:
        print("NOTE: not a full-size figure (no GPU or --layers given); the script only checked itself.")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
