"""Package a demo training run (``examples/train_demo.sh``) as the embedded default.

Copies the stage-two export and the VAE into ``src/fantasytalking/assets/demo/``, writes ``card.json`` (commands,
seed, data, wall times, clip length, loss summary, held-out scores) and keeps the loss curves as CSV in
``benchmarks/results/demo-training/`` (step, loss) for the docs::

    python examples/package_demo.py --run runs/demo --targets benchmarks/results/demo-targets-2026-11-29.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "fantasytalking" / "assets" / "demo"
CURVES = ROOT / "benchmarks" / "results" / "demo-training"


def half_copy(source: Path, target: Path) -> None:
    """Copy an export with its float tensors in float16 (half the size; loading casts them back to the model's
    float32), keeping its metadata; written atomically."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if any(not torch.isfinite(v).all() for v in tensors.values()):
        raise SystemExit(f"error: {source} has values outside float16's range; package it in float32")
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(target)


def metrics_csv(folder: Path) -> Path:
    found = sorted(folder.glob("lightning_logs/version_*/metrics.csv"))
    if not found:
        raise SystemExit(f"error: no lightning_logs/version_*/metrics.csv under {folder}")
    return found[-1]


def curve(path: Path, column: str) -> list[tuple[int, float]]:
    rows = []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if row.get(column):
                rows.append((int(row["step"]), float(row[column])))
    return rows


def wall_seconds(folder: Path) -> float:
    """From the first to the last write of the run's files (logs, checkpoints)."""
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()]
    hparams = sorted(folder.glob("lightning_logs/version_*/hparams.yaml"))
    start = hparams[-1].stat().st_mtime if hparams else min(times)
    return round(max(times) - start, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--shards", type=Path, default=Path("shards/synthtalk"))
    p.add_argument("--targets", type=Path, default=None, help="demo_targets.py JSON of this run")
    p.add_argument("--wall", type=json.loads, default=None,
                   help='measured wall times in seconds, e.g. {"vae": 1500, "stage1": 1800, "stage2": 900}')  # fmt: skip
    args = p.parse_args()
    run = args.run

    ASSETS.mkdir(parents=True, exist_ok=True)
    half_copy(run / "stage2" / "conditioning.safetensors", ASSETS / "model.safetensors")
    half_copy(run / "stage1" / "conditioning.safetensors", ASSETS / "stage1.safetensors")  # the stage-one-only row
    if (ASSETS / "vae").exists():
        shutil.rmtree(ASSETS / "vae")
    shutil.copytree(run / "vae", ASSETS / "vae", ignore=shutil.ignore_patterns("train"))

    CURVES.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for name, folder, column in (("vae", run / "vae" / "train", "train/loss"), ("stage1", run / "stage1", "train/loss"),
                                 ("stage2", run / "stage2", "train/loss")):  # fmt: skip
        points = curve(metrics_csv(folder), column)
        with open(CURVES / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "loss"])
            writer.writerows(points)
        first, last = points[: max(len(points) // 10, 1)], points[-max(len(points) // 10, 1) :]
        summary[name] = {"steps": points[-1][0] + 1, "loss_first_10pct": sum(v for _, v in first) / len(first),
                         "loss_last_10pct": sum(v for _, v in last) / len(last)}  # fmt: skip
    wall = args.wall or {name: wall_seconds(folder) for name, folder in (("vae", run / "vae" / "train"),
                                                                        ("stage1", run / "stage1"),
                                                                        ("stage2", run / "stage2"))}  # fmt: skip
    data = json.loads((args.shards / "synthtalk.json").read_text())
    inputs = json.loads((ASSETS / "inputs.json").read_text()) if (ASSETS / "inputs.json").exists() else {}
    from fantasytalking.training.export import read_export

    stage2 = read_export(ASSETS / "model.safetensors")[1]["training"]
    card = {
        "what": "FantasyTalking's architecture at demo size, trained on SynthTalk (docs/demo.md)",
        "command": "bash examples/train_demo.sh runs/demo && python examples/package_demo.py --run runs/demo",
        "seed": int(stage2.get("seed", 0)),
        "data": {k: data[k] for k in ("clips", "size", "fps", "num_frames", "seed", "split", "languages")},
        "heldout": "fantasytalking synth --out shards/synthtalk-heldout --clips 32 --size 96 --fps 23 --frames 81 "
        "--seed 1 --split heldout",
        "clip_frames": int(data["num_frames"]),
        "size": int(data["size"]),
        "wall_time_s": wall,
        "device": "CPU, 2 cores (shared), torch 2.11, float32 (weights stored in float16)",
        "losses": summary,
        "training_config": {k: stage2.get(k) for k in ("face", "motion", "objective", "optim", "trainable", "trainer")},
        "generation": {"num_inference_steps": 20, "prompt_cfg": 1.0, "audio_cfg": 4.5},
        "inputs": inputs,
    }
    if args.targets is not None:
        targets = json.loads(args.targets.read_text())
        card["heldout_scores"] = {
            "date": targets["date"], "commit": targets["commit"], "checks": targets["checks"],
            "rows": [{k: v for k, v in r.items() if k != "per_clip"} for r in targets["rows"]],
        }  # fmt: skip
    (ASSETS / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    size = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    print(f"packaged {run} into {ASSETS} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
