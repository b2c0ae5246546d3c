"""The demo VAE's floor on the SynthTalk measures: the held-out clips sent through a VAE and back, no diffusion.

Every frame the demo generates comes out of the VAE's decoder, so what the round trip loses no model decoded by
it can win back. For each VAE folder given, on the first ``--clips`` held-out clips (all ``--frames`` frames):

* PSNR of the round trip (dB, signals in [-1, 1]) and the mouth kept (``mouth_r``:
  :func:`fantasytalking.training.vae.reconstruction_scores`);
* the identity error of the reconstructions against each clip's first ORIGINAL frame (the portrait a model is
  given), as ``demo_targets.py`` measures it (``identity_error_over_frames``), and that error split by the
  components of :func:`fantasytalking.metrics.synthtalk.identity_features` (skin, hair, background, shirt RGB;
  face width and height): which part of the picture the decoder loses.

::

    python benchmarks/vae_floor.py --vae src/fantasytalking/assets/demo/vae runs/demo/vae-decoder
    python benchmarks/vae_floor.py --vae A B --name decoder-finetune   # -> results/vae-floor-decoder-finetune-<date>

Writes ``benchmarks/results/vae-floor[-NAME]-<date>.{json,md}`` (device, date, commit, per VAE and component).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from demo_targets import record_header, save_record, vae_round_trip  # noqa: E402
from variants import heldout_clips  # noqa: E402

#: identity_features layout: (name, slice) over its 14 values.
COMPONENTS = (("skin", slice(0, 3)), ("hair", slice(3, 6)), ("background", slice(6, 9)), ("shirt", slice(9, 12)),
              ("face width", slice(12, 13)), ("face height", slice(13, 14)))  # fmt: skip
STRIDE = 8  # every 8th frame from frame 8, as identity_error_over_frames


def floor(vae_dir: Path, clips: list[dict[str, Any]]) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLWan

    from fantasytalking.metrics import synthtalk as st
    from fantasytalking.training.vae import reconstruction_scores

    vae = AutoencoderKLWan.from_pretrained(str(vae_dir), torch_dtype=torch.float32).eval()
    videos = [torch.from_numpy(c["video"]).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0 for c in clips]
    scores = reconstruction_scores(vae, videos)  # psnr, mouth_r, mouth_ratio
    per_clip, parts = [], []
    for c in clips:
        recon = vae_round_trip(vae, c["video"])  # (F, H, W, 3) uint8
        reference = st.identity_features(c["video"][:1])
        picks = recon[STRIDE::STRIDE] if len(recon) > STRIDE else recon[-1:]
        diffs = np.stack([np.abs(st.identity_features(f[None]) - reference) for f in picks])  # (P, 14)
        parts.append(diffs.mean(0))
        per_clip.append({"key": c["key"], "identity_error": float(diffs.mean())})
    by_feature = np.mean(parts, axis=0)  # (14,)
    total = float(by_feature.mean())
    components = {name: {"mean_abs_error": float(by_feature[sl].mean()),
                         "share": float(by_feature[sl].sum() / max(by_feature.sum(), 1e-12))}
                  for name, sl in COMPONENTS}  # fmt: skip
    return {"vae": str(vae_dir), **scores, "identity_error": total, "components": components, "per_clip": per_clip}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"VAE floor on the SynthTalk held-out split: {report['date']}, commit {report['commit']}, "
             f"{report['device']}; "
             f"{report['clips']} clips of {report['frames']} frames, round trip (posterior mode), no diffusion.", "",
             "| VAE | PSNR dB | mouth r | identity error | " + " | ".join(n for n, _ in COMPONENTS) + " |",
             "|---" * (4 + len(COMPONENTS)) + "|"]  # fmt: skip
    for r in report["vaes"]:
        comps = " | ".join(f"{r['components'][n]['mean_abs_error']:.3f} ({r['components'][n]['share']:.0%})"
                           for n, _ in COMPONENTS)  # fmt: skip
        lines.append(f"| `{r['vae']}` | {r['psnr']:.2f} | {r['mouth_r']:.3f} | {r['identity_error']:.4f} | {comps} |")
    lines += ["", "Components: mean absolute error of that part of the identity features (its share of the total)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae", type=Path, nargs="+", required=True, help="exported VAE folders (save_pretrained)")
    p.add_argument("--heldout", type=Path, default=Path("shards/synthtalk-heldout"))
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--name", default="", help="record name suffix")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    header = record_header()
    clips = heldout_clips(args.heldout, {"frames": args.frames, "fps": 23})[: args.clips]
    report = {**header, "clips": len(clips), "frames": args.frames, "heldout": str(args.heldout),
              "vaes": [floor(v, clips) for v in args.vae]}  # fmt: skip
    text = markdown(report)
    prefix = "vae-floor-" + (f"{args.name}-" if args.name else "")
    return save_record(args.out, prefix, report, text)


if __name__ == "__main__":
    raise SystemExit(main())
