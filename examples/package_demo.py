"""Package a demo training run (``examples/train_demo.sh``) as the embedded default.

Copies the stage-two export (float16) and the VAE into ``src/fantasytalking/assets/demo/``, writes ``card.json`` (commands,
seed, data, wall times, clip length, loss summary, held-out scores) and keeps the loss curves as CSV in
``benchmarks/results/demo-training/`` (step, loss) for the docs::

    python examples/package_demo.py --run runs/demo --half-copies   # runs/demo/{model,stage1}.safetensors to score
    python examples/package_demo.py --run runs/demo --targets benchmarks/results/demo-targets-2026-12-01.json
    python examples/package_demo.py --update-card --targets benchmarks/results/demo-targets-2026-12-01.json  # add scores (and their settings) only
    python examples/package_demo.py --continued runs/demo/stage2-pause --continued-shards shards/synthtalk-pause \\
        --targets benchmarks/results/demo-targets-2026-12-02-3.json   # a continuation of stage two replaces the model

``--decoder`` packages a fine-tune of the packaged VAE's DECODER (``python -m fantasytalking.training.vae
--decoder-only --init-from src/fantasytalking/assets/demo/vae``): its export replaces ``vae/``, after a check that
its encoder, ``quant_conv`` and latent statistics are bit-identical to the packaged ones (the stages were trained on
those latents); the card records it under ``vae.decoder_finetune`` with its loss curve ``vae-decoder.csv``::

    python examples/package_demo.py --decoder runs/vae-decoder --decoder-shards shards/synthtalk \
        --targets benchmarks/results/demo-targets-2026-12-04.json

``--stages`` packages a rerun of both stages on the packaged VAE (``RUN/stage1``, ``RUN/stage2``): both exports
replace the packaged ones, the loss curves become ``stage1-<run name>.csv`` / ``stage2-<run name>.csv``, and the card
takes the run's data, losses, wall times and training config, keeping the replaced model's under ``previous``::

    python examples/package_demo.py --stages runs/joint --stages-shards shards/synthtalk-j \
        --targets benchmarks/results/demo-targets-2026-12-04-3.json

``--motion-stats`` gives the packaged model and stage-one exports the motion request scale fitted to the training
shards' ``stats.json`` (a request is then a quantile of the training clips' motion; docs/design.md): it copies the
files the record was measured on, after checking that they are the packaged ones with that scale and nothing else::

    python examples/package_demo.py --motion-stats shards/synthtalk-j/stats.json \
        --targets benchmarks/results/demo-targets-2026-12-06-15.json

``--continued`` packages a run that continued the packaged stage two (``examples/train_demo.sh`` step 3c): its
export becomes ``model.safetensors``, its loss curve ``stage2-continued-<n>.csv`` beside the others, and the card records its data,
steps, wall time and losses under ``continued`` (the stage-one export, the VAE and the rest of the card stay).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fantasytalking.demo import DEMO_GENERATION
from fantasytalking.io import write_json_atomic
from fantasytalking.loading.files import file_sha256

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "fantasytalking" / "assets" / "demo"
CURVES = ROOT / "benchmarks" / "results" / "demo-training"


#: What the card records of a SynthTalk data set (its synthtalk.json) and of the packaged model's training config.
DATA_KEYS = ("clips", "size", "fps", "num_frames", "seed", "split", "languages", "identities", "distinct_identities",
             "pause_share")
TRAINING_CONFIG_KEYS = ("face", "motion", "objective", "optim", "trainable", "trainer")


def data_record(shards: Path) -> dict[str, Any]:
    """The card's record of the SynthTalk shards a run trained on (keys the shards do not have are None)."""
    data = json.loads((shards / "synthtalk.json").read_text())
    return {k: data.get(k) for k in DATA_KEYS}


def packaged_training_config() -> dict[str, Any]:
    """The training config of the packaged model (its export's metadata; the tensors are not read)."""
    from fantasytalking.training.export import read_export_config

    return read_export_config(ASSETS / "model.safetensors")["training"]


def half_copy(source: Path, target: Path) -> None:
    """Copy an export with its float tensors in float16 (half the size; loading casts them back to the model's
    float32), keeping its metadata; written atomically."""
    import torch
    from safetensors import safe_open

    from fantasytalking.loading.files import save_safetensors

    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if any(not torch.isfinite(v).all() for v in tensors.values()):
        raise SystemExit(f"error: {source} has values outside float16's range; package it in float32")
    save_safetensors(tensors, target, metadata)  # atomic; the same content gives the same sha256


def ship_half_copies(sources: Mapping[str, Path], targets_path: Path | None, folder: Path | None = None) -> None:
    """Write float16 copies of the exports ``sources`` (``{"model": ..., "stage1": ...}``) as ``<name>.safetensors``
    into ``folder`` (the package), after checking that the model copy is the file the record at ``targets_path``
    measured (its ``model_sha256``; a record without one is not checked). Copies are reproducible
    (``save_safetensors``), so a copy scored before (``--half-copies``) has the same sha256 as the one packaged.
    On a mismatch nothing is replaced."""
    import os
    import tempfile

    folder = ASSETS if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".half-") as scratch:
        copies = {name: Path(scratch) / f"{name}.safetensors" for name in sources}
        for name, source in sources.items():
            half_copy(source, copies[name])
        if targets_path is not None and "model" in copies:
            record = json.loads(targets_path.read_text())
            want, got = record.get("model_sha256"), file_sha256(copies["model"])
            if want is not None and want != got:
                raise SystemExit(f"error: {targets_path} measured {record.get('model')}, not the float16 copy of "
                                 f"{sources['model']} (model_sha256 differs); score the copies that "
                                 "`package_demo.py --half-copies RUN` writes (examples/train_demo.sh does), then package")
        for name, copy in copies.items():
            os.replace(copy, folder / f"{name}.safetensors")


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


def run_wall(wall: Mapping[str, float], name: str, folder: Path) -> float:
    """The wall time of run ``name``: as given in ``--wall`` (a run kept in the repository has no file times of its
    own: git keeps none), else read from ``folder``'s file times (:func:`wall_seconds`)."""
    return float(wall[name]) if name in wall else wall_seconds(folder)


def loss_summary(points: list[tuple[int, float]]) -> dict[str, Any]:
    """Steps and the mean loss of the first and last 10% of a run's logged points."""
    k = max(len(points) // 10, 1)
    first, last = points[:k], points[-k:]
    return {"steps": points[-1][0] + 1, "loss_first_10pct": sum(v for _, v in first) / len(first),
            "loss_last_10pct": sum(v for _, v in last) / len(last)}  # fmt: skip


def write_curve(name: str, points: list[tuple[int, float]]) -> None:
    CURVES.mkdir(parents=True, exist_ok=True)
    with open(CURVES / f"{name}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "loss"])
        writer.writerows(points)


def package_continued(run: Path, shards: Path, card: dict[str, Any], command: str,
                      wall: Mapping[str, float], targets: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Put the continuation ``run`` of stage two into the package; the card with its record under ``continued``."""
    export = run / "conditioning.safetensors"
    if not export.is_file():
        raise SystemExit(f"error: {export} is missing; the continued run did not finish (rerun it, then package)")
    points = curve(metrics_csv(run), "train/loss")
    previous = card.get("continued", [])
    name = f"stage2-continued-{len(previous) + 1}"  # never the curve of the packaged stage two itself
    ship_half_copies({"model": export}, targets)
    write_curve(name, points)
    config = packaged_training_config()
    return {**card,
            "training_config": {k: config.get(k) for k in TRAINING_CONFIG_KEYS},
            "continued": [*previous, {
                "command": command, "from": "the packaged stage two", "curve": f"benchmarks/results/demo-training/{name}.csv",
                "data": data_record(shards),
                "wall_time_s": run_wall(wall, "continued", run), "losses": loss_summary(points)}]}  # fmt: skip


def package_stages(run: Path, shards: Path, card: dict[str, Any], command: str,
                   wall: Mapping[str, float], targets: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Put a rerun of BOTH stages on the packaged VAE (``run/stage1``, ``run/stage2``) into the package: its exports
    replace ``model.safetensors`` and ``stage1.safetensors``; the card's data, losses, wall times and training
    config become the run's (the VAE and its record stay), and the replaced model is summarised under ``previous``."""
    exports = {name: run / name / "conditioning.safetensors" for name in ("stage1", "stage2")}
    for export in exports.values():
        if not export.is_file():
            raise SystemExit(f"error: {export} is missing; the run did not finish (rerun it, then package)")
    data = data_record(shards)
    points = {name: curve(metrics_csv(run / name), "train/loss") for name in exports}
    tag = run.name
    ship_half_copies({"model": exports["stage2"], "stage1": exports["stage1"]}, targets)  # stage1: its own row
    for name, pts in points.items():
        write_curve(f"{name}-{tag}", pts)
    config = packaged_training_config()
    previous = {k: card.get(k) for k in ("command", "data", "wall_time_s", "losses", "continued", "heldout_scores")
                if k in card}  # fmt: skip
    out = {k: v for k, v in card.items() if k != "continued"}
    out.update({
        "command": command,
        "data": data,
        "clip_frames": int(data["num_frames"]), "size": int(data["size"]),
        "wall_time_s": {"vae": card.get("wall_time_s", {}).get("vae"),
                        **{name: run_wall(wall, name, run / name) for name in exports}},
        "losses": {"vae": card.get("losses", {}).get("vae"), **{name: loss_summary(pts) for name, pts in points.items()}},
        "curves": {name: f"benchmarks/results/demo-training/{name}-{tag}.csv" for name in exports},
        "training_config": {k: config.get(k) for k in TRAINING_CONFIG_KEYS},
        "previous": previous,
    })  # fmt: skip
    return out


def package_decoder(run: Path, shards: Path, card: dict[str, Any], command: str,
                    wall: Mapping[str, float], targets: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Put a decoder-only fine-tune ``run`` (an exported VAE folder with its ``train/``) in place of the packaged
    VAE; the card with its record under ``vae.decoder_finetune``. Refuses a VAE whose encoder side differs.
    (``targets`` is the record of the whole package; the model files, which it names, stay as they are.)"""
    from diffusers import AutoencoderKLWan

    if not (run / "config.json").is_file():
        raise SystemExit(f"error: {run} holds no exported VAE (config.json); the fine-tune did not finish")
    new, old = (AutoencoderKLWan.from_pretrained(str(d)) for d in (run, ASSETS / "vae"))
    for key in ("latents_mean", "latents_std", "z_dim"):
        if new.config[key] != old.config[key]:
            raise SystemExit(f"error: {run} has another {key} than the packaged VAE; the stages were trained on the "
                             "packaged latents: fine-tune with --decoder-only --init-from the packaged VAE")  # fmt: skip
    old_state, new_state = old.state_dict(), new.state_dict()
    if set(old_state) != set(new_state):
        raise SystemExit(f"error: {run} is not the packaged VAE's architecture")
    changed = [k for k in old_state if k.startswith(("encoder.", "quant_conv.")) and not old_state[k].equal(new_state[k])]
    if changed:
        raise SystemExit(f"error: {run} changed the encoder ({changed[0]}, {len(changed)} tensors); the stages were "
                         "trained on the packaged latents: fine-tune with --decoder-only")  # fmt: skip
    data = json.loads((shards / "synthtalk.json").read_text())
    points = curve(metrics_csv(run / "train"), "train/loss")
    write_curve("vae-decoder", points)
    heldout = run / "train" / "heldout.csv"
    scores = list(csv.DictReader(heldout.read_text().splitlines())) if heldout.is_file() else []
    if scores:
        shutil.copyfile(heldout, CURVES / "vae-decoder-heldout.csv")
    tmp = ASSETS / "vae.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(run, tmp, ignore=shutil.ignore_patterns("train"))
    shutil.rmtree(ASSETS / "vae")
    tmp.replace(ASSETS / "vae")
    vae = dict(card.get("vae", {}))
    vae["decoder_finetune"] = {
        "command": command, "from": "the packaged VAE (its encoder, quant_conv and latents_mean / latents_std kept "
        "bit for bit)", "curve": "benchmarks/results/demo-training/vae-decoder.csv",
        "data": {k: data.get(k) for k in ("clips", "size", "fps", "num_frames", "seed", "split")},
        "wall_time_s": run_wall(wall, "decoder", run / "train"), "losses": loss_summary(points),
        "heldout_scores": [{k: float(v) for k, v in row.items()} for row in scores]}  # fmt: skip
    return {**card, "vae": vae}


def package_motion_scale(stats_path: Path, targets_path: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Replace the packaged model and stage-one exports by the files the record ``targets_path`` was measured on
    (its ``model`` and ``stage1`` paths), after checking that each is the packaged export with the motion request
    scale fitted to ``stats_path`` (the training shards' ``stats.json``, with ``quantiles``) and nothing else
    changed, and that the model file is the one measured (``model_sha256``). The files are copied byte for byte
    (files written before ``save_safetensors`` sorted the metadata have it in a random order, so a refit would
    not reproduce their hash).
    The card records the fit under ``motion_request_scale``. On any mismatch nothing is replaced."""
    import tempfile

    import torch

    from fantasytalking.errors import FantasyTalkingError
    from fantasytalking.training.export import read_export, with_motion_request_scale

    stats = json.loads(stats_path.read_text())
    targets = json.loads(targets_path.read_text())
    measured = {name: Path(targets[name]) for name in ("model", "stage1") if targets.get(name)}
    if "model" not in measured or not measured["model"].is_file():
        raise SystemExit(f"error: {targets_path} names no model file that exists ({targets.get('model')})")
    if file_sha256(measured["model"]) != targets.get("model_sha256"):
        raise SystemExit(f"error: {measured['model']} changed since {targets_path} was measured (model_sha256)")
    table = None
    with tempfile.TemporaryDirectory(dir=ASSETS) as tmp:
        for name, path in measured.items():
            packaged = ASSETS / f"{name}.safetensors"
            if not packaged.is_file() or not path.is_file():
                raise SystemExit(f"error: {packaged} or the measured {path} does not exist")
            try:
                table = with_motion_request_scale(packaged, stats, Path(tmp) / f"{name}.safetensors")
                want, have = read_export(Path(tmp) / f"{name}.safetensors"), read_export(path)
            except FantasyTalkingError as err:
                raise SystemExit(f"error: {name}: {err}") from None
            same = want[1] == have[1] and want[0].keys() == have[0].keys() and all(
                torch.equal(want[0][k], have[0][k]) for k in want[0])  # fmt: skip
            if not same:
                raise SystemExit(f"error: the measured {path} is not the packaged {packaged.name} with the request "
                                 f"scale of {stats_path}; measure the record on with_motion_request_scale's output")
    for name, path in measured.items():
        tmp_copy = ASSETS / f"{name}.safetensors.tmp"
        shutil.copyfile(path, tmp_copy)
        tmp_copy.replace(ASSETS / f"{name}.safetensors")
    card = dict(card)
    card["motion_request_scale"] = {
        "stats": str(stats_path), "levels": len(table), "median_request_labels": table[(len(table) - 1) // 2],
        "what": "a request in [0, 1] is a quantile of the training clips' motion (0.5: the median clip), read "
        "through this table into the linear p1-p99 labels the model was trained on (docs/design.md)"}  # fmt: skip
    return card


def heldout_scores(path: Path, targets: dict[str, Any]) -> dict[str, Any]:
    """The card's summary of a ``benchmarks/demo_targets.py`` record ``targets`` read from ``path`` (the rows
    without their per-clip values)."""
    return {
        "date": targets["date"], "commit": targets["commit"], "checks": targets["checks"],
        "generation": targets.get("generation"), "record": f"benchmarks/results/{path.name}",
        "motion_embedding": targets.get("motion_embedding"), "motion_gain": targets.get("motion_gain", 1.0),
        "rows": [{k: v for k, v in r.items() if k != "per_clip"} for r in targets["rows"]],
    }  # fmt: skip


#: The card's ``generation`` keys a ``demo_targets.py`` record sets (the demo then generates as it was measured).
MEASURED_GENERATION = ("num_inference_steps", "prompt_cfg", "audio_cfg", "segment_frames")


def with_targets(card: dict[str, Any], path: Path) -> dict[str, Any]:
    """The card with the held-out scores of the demo_targets.py record at ``path`` and their generation settings."""
    targets = json.loads(path.read_text())
    card["heldout_scores"] = heldout_scores(path, targets)
    card["generation"] = measured_generation(card, targets)
    return card


def measured_generation(card: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
    """The card's generation settings with those the held-out targets (a demo_targets.py record) were measured with."""
    measured = targets.get("generation") or {}
    out = {**card.get("generation", {}), **{k: measured[k] for k in MEASURED_GENERATION if k in measured}}
    if "motion_gain" in targets:  # the motion rows' gain (records since 2026-12-03; only those rows depend on it)
        out["motion_gain"] = targets["motion_gain"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--shards", type=Path, default=Path("shards/synthtalk"))
    p.add_argument("--targets", type=Path, default=None, help="demo_targets.py JSON of this run")
    p.add_argument("--wall", type=json.loads, default=None,
                   help='measured wall times in seconds by run, e.g. {"vae": 1500, "stage1": 1800, "stage2": 900}, '
                   '{"decoder": 1097} or {"continued": 900}; a run not named is timed from its file times, which '
                   'git does not keep')  # fmt: skip
    p.add_argument("--vae-steps", type=int, default=None, help="the step the VAE was exported at (--export-from)")
    p.add_argument("--audio-cfg", type=float, default=DEMO_GENERATION["audio_cfg"],
                   help="audio guidance the demo generates with")
    p.add_argument("--vae-start", default="the 4x8x8 demo VAE of commit 8ac4415 (1,200 steps: 800 from scratch, then "
                   "400 from that export; examples/train_demo.sh step 2a)",
                   help="what the VAE run started from (recorded in the card)")  # fmt: skip
    p.add_argument("--update-card", action="store_true",
                   help="only add --targets to the packaged card.json (targets measured after packaging; no run needed)")
    p.add_argument("--continued", type=Path, default=None,
                   help="a run that continued the packaged stage two: its export replaces model.safetensors")
    p.add_argument("--continued-shards", type=Path, default=None, help="the shards the --continued run trained on")
    p.add_argument("--decoder", type=Path, default=None,
                   help="a decoder-only fine-tune of the packaged VAE (an exported folder): it replaces vae/")
    p.add_argument("--decoder-shards", type=Path, default=Path("shards/synthtalk"),
                   help="the shards the --decoder run trained on")  # fmt: skip
    p.add_argument("--decoder-command", default="python -m fantasytalking.training.vae --decoder-only --init-from "
                   "src/fantasytalking/assets/demo/vae (docs/demo.md)",
                   help="how the --decoder run was made (recorded in the card)")  # fmt: skip
    p.add_argument("--continued-command", default="examples/train_demo.sh, step 3c",
                   help="how the --continued run was made (recorded in the card)")
    p.add_argument("--stages", type=Path, default=None,
                   help="a rerun of both stages on the packaged VAE (RUN/stage1, RUN/stage2): it replaces both models")
    p.add_argument("--stages-shards", type=Path, default=None, help="the shards the --stages run trained on")
    p.add_argument("--stages-command", default="examples/train_demo.sh, step 3 (docs/demo.md)",
                   help="how the --stages run was made (recorded in the card)")
    p.add_argument("--half-copies", action="store_true",
                   help="only write RUN/model.safetensors and RUN/stage1.safetensors, the float16 copies of the stage "
                   "exports the package ships (score them with demo_targets.py, then package with --targets)")
    p.add_argument("--motion-stats", type=Path, default=None,
                   help="the training shards' stats.json (with quantiles): fit the packaged models' motion request "
                   "scale to it (docs/design.md); with --targets measured on the scaled model")  # fmt: skip
    args = p.parse_args()
    packagers = {"decoder": (package_decoder, args.decoder_shards, args.decoder_command, "the decoder fine-tune"),
                 "continued": (package_continued, args.continued_shards, args.continued_command, "the continued run"),
                 "stages": (package_stages, args.stages_shards, args.stages_command, "the rerun of both stages")}
    for flag, (package, shards, command, what) in packagers.items():
        if getattr(args, flag) is None:
            continue
        if shards is None or args.targets is None:
            p.error(f"--{flag} needs --{flag}-shards and --targets (the demo_targets.py JSON measured on the result)")
        card = package(getattr(args, flag), shards, json.loads((ASSETS / "card.json").read_text()), command,
                       args.wall or {}, args.targets)  # fmt: skip
        write_json_atomic(ASSETS / "card.json", with_targets(card, args.targets))
        print(f"packaged {what} {getattr(args, flag)} into {ASSETS}")
        return 0
    if args.motion_stats is not None:
        if args.targets is None:
            p.error("--motion-stats needs --targets (the demo_targets.py JSON measured on the scaled model)")
        card = package_motion_scale(args.motion_stats, args.targets, json.loads((ASSETS / "card.json").read_text()))
        write_json_atomic(ASSETS / "card.json", with_targets(card, args.targets))
        print(f"fitted the motion request scale of {ASSETS} to {args.motion_stats}")
        return 0
    if args.update_card:
        if args.targets is None:
            p.error("--update-card needs --targets (a demo_targets.py JSON)")
        write_json_atomic(ASSETS / "card.json", with_targets(json.loads((ASSETS / "card.json").read_text()), args.targets))
        print(f"added the held-out scores of {args.targets} and their generation settings to {ASSETS / 'card.json'}")
        return 0
    run = args.run
    runs = [("vae", run / "vae" / "train"), ("stage1", run / "stage1"), ("stage2", run / "stage2")]

    exports = {"model": run / "stage2" / "conditioning.safetensors", "stage1": run / "stage1" / "conditioning.safetensors"}
    if args.half_copies:  # what the package will ship, for demo_targets.py to score first
        ship_half_copies(exports, None, folder=run)
        print(f"wrote the float16 copies {run / 'model.safetensors'} and {run / 'stage1.safetensors'}")
        return 0
    ship_half_copies(exports, args.targets)  # stage1: the stage-one-only row
    if (ASSETS / "vae").exists():
        shutil.rmtree(ASSETS / "vae")
    shutil.copytree(run / "vae", ASSETS / "vae", ignore=shutil.ignore_patterns("train"))

    heldout_vae = run / "vae" / "train" / "heldout.csv"  # ReconstructionMonitor: step, psnr, mouth_r, mouth_ratio
    vae_scores = list(csv.DictReader(heldout_vae.read_text().splitlines())) if heldout_vae.is_file() else []
    if vae_scores:
        CURVES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(heldout_vae, CURVES / "vae-heldout.csv")
    summary: dict[str, Any] = {}
    for name, folder in runs:
        points = curve(metrics_csv(folder), "train/loss")
        if name == "vae" and args.vae_steps:  # the export was taken at this step (a run stopped later)
            points = [(step, value) for step, value in points if step < args.vae_steps]
        write_curve(name, points)
        summary[name] = loss_summary(points)
    wall = {name: run_wall(args.wall or {}, name, folder) for name, folder in runs}
    data = data_record(args.shards)
    inputs = json.loads((ASSETS / "inputs.json").read_text()) if (ASSETS / "inputs.json").exists() else {}
    stage2 = packaged_training_config()
    card = {
        "what": "FantasyTalking's architecture at demo size, trained on SynthTalk (docs/demo.md)",
        "command": "bash examples/train_demo.sh runs/demo (data, VAE, both stages, targets, this package)",
        # the seed the frozen random umT5 / CLIP are rebuilt from (load_demo), i.e. backbone.seed of the training
        "seed": int(stage2.get("backbone", {}).get("seed", 0)),
        "training_seeds": {"data_and_draws": stage2.get("seed"), "backbone": stage2.get("backbone", {}).get("seed")},
        "data": data,
        "heldout": "fantasytalking synth --out shards/synthtalk-heldout --clips 32 --size 96 --fps 23 --frames 81 "
        "--seed 1 --split heldout",
        "clip_frames": int(data["num_frames"]),
        "size": int(data["size"]),
        "wall_time_s": wall,
        "device": "CPU, 2 cores (shared), torch 2.11, float32 (weights stored in float16)",
        "losses": summary,
        "training_config": {k: stage2.get(k) for k in TRAINING_CONFIG_KEYS},
        "vae": {
            "what": "AutoencoderKLWan, z 16, spatial stride 8, no temporal compression (per frame), base 16, "
            "dim_mult [1,2,2,2], Wan2.2 residual blocks",
            "command": "python -m fantasytalking.training.vae --init-per-frame <4x8x8 VAE> --steps 400 --lr 2e-4 "
            "--batch-size 16 --crop-size 48 --mouth-crop-prob 0.5 --mouth-weight 2 --single-frame-prob 1.0 "
            "--frames-per-clip 4 --seed 0 (examples/train_demo.sh, step 2b)",
            "started_from": args.vae_start,
            "heldout_scores": [{k: float(v) for k, v in row.items()} for row in vae_scores],
        },
        "generation": {"num_inference_steps": DEMO_GENERATION["num_inference_steps"],
                       "prompt_cfg": DEMO_GENERATION["prompt_cfg"], "audio_cfg": args.audio_cfg,
                       "segment_frames": DEMO_GENERATION["segment_frames"]},
        "inputs": inputs,
    }
    if args.targets is not None:
        card = with_targets(card, args.targets)
    write_json_atomic(ASSETS / "card.json", card)
    size = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    print(f"packaged {run} into {ASSETS} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
