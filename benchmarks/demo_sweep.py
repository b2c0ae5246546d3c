"""One generation setting of the demo model swept over held-out clips: lip sync, closed mouth, identity per value.

``benchmarks/demo_targets.py`` measures the shipped settings; this measures how one setting moves the same
measures, on held-out clips chosen by index (keep them apart from the targets' clips 0-7 when choosing a
default)::

    python benchmarks/demo_sweep.py --setting audio_cfg --values 1.0 2.5 4.5 --clips 8 9 10
    python benchmarks/demo_sweep.py --setting segment_frames --values 0 17 --clips 8 9 10
    python benchmarks/demo_sweep.py --setting motion_gain --values 1 4 8 --motion-levels 0.1 1.0 --clips 8 9 10 11

``--motion-levels``: every value is measured at each of these requested motion intensities (face and body
alike), one row per (value, level); without it, at the demo's default motion.

Writes ``benchmarks/results/demo-sweep-<setting>-<date>.{json,md}`` (device, date, commit, per-clip values).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_targets import mean, record_header, save_record, score  # noqa: E402
from variants import heldout_clips  # noqa: E402

#: Settings the sweep can vary, with their type (the rest of the generation stays the demo's).
SETTINGS = {"audio_cfg": float, "prompt_cfg": float, "num_inference_steps": int, "segment_frames": int,
            "shift": float, "motion_gain": float, "face_scale": float,
            "pin_first_frame": lambda v: bool(int(v))}  # fmt: skip
KEYS = ("lipsync", "closed_in_long_silence", "identity_error", "head_motion")


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from fantasytalking.demo import DEMO_DIR, DEMO_GENERATION, demo_card
    from fantasytalking.training.presets import demo_pipeline

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    p.add_argument("--values", nargs="+", required=True, help="values of the setting")
    p.add_argument("--clips", type=int, nargs="+", default=[8, 9, 10], help="held-out clip indices")
    p.add_argument("--model", type=Path, default=DEMO_DIR / "model.safetensors")
    p.add_argument("--vae", type=Path, default=DEMO_DIR / "vae")
    p.add_argument("--heldout", type=Path, default=Path("shards/synthtalk-heldout"))
    p.add_argument("--frames", type=int, default=81, help="frames of the held-out clips")
    p.add_argument("--motion-levels", type=float, nargs="+", default=None,
                   help="requested motion intensities (face and body) to measure every value at")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    header = record_header()  # the commit of the code that runs, read before the tree can change
    values = [SETTINGS[args.setting](v) for v in args.values]

    available = heldout_clips(args.heldout, {"frames": args.frames, "fps": 23})
    if max(args.clips) >= len(available):
        p.error(f"--clips {max(args.clips)} is past the {len(available)} held-out clips in {args.heldout}")
    clips = [available[i] for i in args.clips]
    pipe = demo_pipeline(args.vae, seed=int(demo_card()["seed"]), conditioning=args.model)
    base = {k: DEMO_GENERATION[k] for k in ("num_inference_steps", "max_edge", "fps", "prompt_cfg", "audio_cfg",
                                            "segment_frames")}  # fmt: skip
    base.update(max_frames=args.frames, seed=0)
    levels: list[float | None] = list(args.motion_levels) if args.motion_levels else [None]
    rows = []
    for value in values:
        for level in levels:
            gen = {**base, args.setting: value}
            if level is not None:
                gen.update(face_motion=level, body_motion=level)
            start, per_clip = time.perf_counter(), []
            for clip in clips:
                lm = clip["landmarks"]
                with mock.patch("fantasytalking.face.detect_face_landmarks", lambda rgb, _lm=lm: (None, _lm)):
                    frames = pipe(Image.fromarray(clip["image"]), clip["audio"], **gen, progress=False).frames
                per_clip.append({"key": clip["key"], **score(frames, clip, 23.0)})
            summary = {k: mean([c.get(k) for c in per_clip]) for k in KEYS}
            rows.append({"value": value, "motion": level, "seconds": round(time.perf_counter() - start, 1), **summary,
                         "per_clip": per_clip})  # fmt: skip
            at = "" if level is None else f" (motion {level})"
            print(f"{args.setting} {value}{at}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None),
                  flush=True)  # fmt: skip
    report = {**header, "model": str(args.model), "heldout": str(args.heldout), "setting": args.setting, "clips": args.clips,
              "motion_levels": args.motion_levels,
              "generation": base, "rows": rows}  # fmt: skip
    return save_record(args.out, f"demo-sweep-{args.setting}-", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    where = f" of {report['heldout']}" if report.get("heldout") else ""  # absent from records before 2026-12-06
    lines = [f"Demo model, `{report['setting']}` swept on held-out clips {report['clips']}{where}: {report['date']}, commit "
             f"{report['commit']}, {report['device']}; the rest of the generation: {report['generation']}.", "",
             f"| {report['setting']} | motion | lip-sync r ↑ | closed in silences > 0.3 s ↑ | identity error ↓ | head motion "
             "| seconds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        motion = "default" if r.get("motion") is None else r["motion"]
        lines.append(f"| {r['value']} | {motion} | {f(r['lipsync'])} | {f(r['closed_in_long_silence'])} | "
                     f"{f(r['identity_error'])} | {f(r['head_motion'])} | {r['seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
