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
from demo_targets import record_header, save_record  # noqa: E402
from variants import heldout_clips  # noqa: E402

from fantasytalking.metrics.synthtalk import IDENTITY_COMPONENTS  # noqa: E402

COMPONENTS = tuple(IDENTITY_COMPONENTS.items())  # (name, slice of the 14 identity features)


def floor(vae_dir: Path, clips: list[dict[str, Any]]) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLWan

    from fantasytalking.metrics import synthtalk as st
    from fantasytalking.training.vae import round_trip, score_reconstructions

    vae = AutoencoderKLWan.from_pretrained(str(vae_dir), torch_dtype=torch.float32).eval()
    pairs, per_clip, parts = [], [], []
    for c in clips:
        x = torch.from_numpy(c["video"]).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0  # (1, 3, F, H, W)
        recon = round_trip(vae, x)  # the VAE runs once per clip: PSNR / mouth_r and the identity both read it
        pairs.append((x, recon))
        # against the clip's first ORIGINAL frame (the portrait), over the frames identity_error_over_frames uses
        part = st.identity_components_over_frames(st.as_frames(recon[0].cpu()), c["video"][:1])
        parts.append(part)
        per_clip.append({"key": c["key"], "identity_error": st.combine_identity_components(part),
                         "identity_face_error": st.combine_identity_components(part, st.FACE_COMPONENTS)})  # fmt: skip
    scores = score_reconstructions(pairs)  # psnr, mouth_r, mouth_ratio
    means = {name: float(np.mean([p[name] for p in parts])) for name, _ in COMPONENTS}
    weighted = {name: means[name] * (sl.stop - sl.start) for name, sl in COMPONENTS}
    components = {name: {"mean_abs_error": means[name], "share": weighted[name] / max(sum(weighted.values()), 1e-12)}
                  for name, _ in COMPONENTS}  # fmt: skip
    return {"vae": str(vae_dir), **scores, "identity_error": st.combine_identity_components(means),
            "components": components, "per_clip": per_clip}


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
