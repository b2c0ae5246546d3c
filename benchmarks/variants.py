"""Variant comparisons on the SynthTalk held-out split, in the form of the paper's ablation (Table 4).

Rows: clip-level only (stage one), frame-level only (stage two from scratch), both stages, both stages without the
face conditioner; then, on the both-stages weights, motion intensity 0.1 / 0.5 / 1.0 and audio guidance on all
steps versus a partial step range. Each training variant runs ``examples/finetune.py`` (the LightningCLI of the
project, its stage configs with the ``tiny`` or ``demo`` overlay) in its own process on a SynthTalk train split; each export is
loaded with :func:`fantasytalking.training.load_into_pipeline` and generates one clip per held-out clip (its first
frame as the image, its audio as the speech). The clips are scored from their pixels with
:mod:`fantasytalking.metrics.synthtalk` against the clip's ground truth (lip-sync correlation with the true mouth
opening, mouth closed in silence, identity error against the reference frame, head motion, motion energy) and with
:class:`fantasytalking.metrics.LandmarkLipSync` (dlib landmarks; no downloaded weights besides dlib's).

Column analogues of Table 4 (FVD / Sync-C / Sync-D / IDC / SD): FVD (with ``--i3d i3d_torchscript.pt``; null with
its reason otherwise: the file cannot be downloaded here), lip sync r ~ Sync-C, identity error ~ 1 - IDC, head motion
and motion energy ~ SD (dynamics). The FVD is a small-sample one (a few dozen clips): comparable between rows of
one run, not with published values.

Quick mode (CI, CPU, a few minutes; the values of random tiny models trained a few steps are noise, only crashes
count)::

    python benchmarks/variants.py                       # -> benchmarks/results/variants-quick-<date>.{json,md}
    python benchmarks/variants.py --out /tmp/res --train-clips 2 --heldout-clips 1 --train-steps 1

Full mode (one GPU; the same code path on the ``demo`` preset: each variant is the demo recipe of docs/demo.md,
trained from scratch on 1,600 SynthTalk clips of 17 frames at 96 px with the packaged demo VAE, and scored on
81-frame held-out clips, each generated as one clip with 20 steps, as the demo does)::

    python benchmarks/variants.py --full                # -> benchmarks/results/variants-full-<date>.{json,md}
    python benchmarks/variants.py --full --train-steps 5000 --train-arg=--trainer.precision=bf16-mixed
    python benchmarks/variants.py --full --accelerator cpu --device cpu --jobs 1   # ~8 h on 2 CPU cores

Every setting can be overridden on the command line (``--size``, ``--frames``, ``--steps``...); ``--train-arg``
passes extra flags to every training run. A measure that fails on a video (a noise video has no face to find)
is recorded as null with its reason; a training or generation failure is recorded too and makes the exit code 1.

SynthTalk faces at 64-256 px are below the size dlib's detector finds, so generation hands the pipeline the clip's
ground-truth landmarks of its first frame (the SynthTalk geometry, as the shards' face crops were made) in place of
face detection; the face encoder and the rest of the pipeline run as usual.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FINETUNE = ROOT / "examples" / "finetune.py"
CONFIGS = ROOT / "examples" / "configs"
RESULTS = Path(__file__).resolve().parent / "results"

#: Settings of the two modes (every one overridable on the command line).
#: ``preset``: the model size (``tiny``: random 2-block models; ``demo``: the demo preset with the packaged demo VAE,
#: ``vae`` overriding it); ``frames``: training clip length; ``heldout_frames``: held-out clip length (0: the same),
#: generated as one clip even when longer (consecutive clips of ``frames`` lose the lip sync: docs/design.md).
QUICK: dict[str, Any] = dict(preset="tiny", vae="", train_clips=8, heldout_clips=3, size=64, frames=9,
                             heldout_frames=0, fps=23, train_steps=4, steps=2, batch_size=2, seed=0,
                             accelerator="cpu", device="cpu")  # fmt: skip
FULL: dict[str, Any] = dict(preset="demo", vae="", train_clips=1600, heldout_clips=32, size=96, frames=17,
                            heldout_frames=81, fps=23, train_steps=2000, steps=20, batch_size=4, seed=0,
                            accelerator="gpu", device="cuda")  # fmt: skip


def heldout_frames(s: dict[str, Any]) -> int:
    return int(s.get("heldout_frames") or s["frames"])


def demo_vae_path(s: dict[str, Any]) -> Path:
    """The VAE of the ``demo`` preset runs: ``--vae``, else the packaged demo model's."""
    from fantasytalking.demo import DEMO_DIR

    path = Path(s.get("vae") or DEMO_DIR / "vae")
    if not (path / "config.json").is_file():
        raise SystemExit(f"error: no demo VAE at {path}; pass --vae (a WanVAETrainer export, docs/demo.md)")
    return path

#: Training variants: name -> (finetune.py sub-command, stage config, extra flags).
TRAINING: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "clip": ("fit", "stage1.yaml", ()),
    "frame": ("fit", "stage2.yaml", ()),
    "both": ("stages", None, ()),
    "noface": ("stages", None, ("--model.init_args.face", "null")),
}


@dataclass
class Row:
    """One row of the table: trained weights (a :data:`TRAINING` name) and inference settings."""

    name: str
    group: str
    training: str
    motion: float | None = None  # face and body motion intensity; None: the conditioner's default (0.5)
    guidance: str = "all"  # audio guidance on "all" steps or a "partial" range (the first half)
    clips: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def make_rows() -> list[Row]:
    return [
        Row("clip-level only (stage 1)", "training", "clip"),
        Row("frame-level only (stage 2)", "training", "frame"),
        Row("both stages", "training", "both"),
        Row("both stages, no face conditioner", "training", "noface"),
        Row("motion intensity 0.1", "motion", "both", motion=0.1),
        Row("motion intensity 0.5", "motion", "both", motion=0.5),
        Row("motion intensity 1.0", "motion", "both", motion=1.0),
        Row("audio guidance, all steps", "guidance", "both", guidance="all"),
        Row("audio guidance, partial steps", "guidance", "both", guidance="partial"),
    ]


#: Measures of one clip: name, higher is better (None: neither), markdown header.
MEASURES: tuple[tuple[str, bool | None, str], ...] = (
    ("fvd", False, "FVD ↓"),
    ("lipsync", True, "lip sync r (truth) ↑"),
    ("closed_in_silence", True, "closed in silence ↑"),
    ("landmark_lipsync", True, "landmark sync r ↑"),
    ("identity_error", False, "identity error ↓"),
    ("head_motion", None, "head motion"),
    ("motion_energy", None, "motion energy"),
)


# --------------------------------------------------------------------------------------------------- data


def make_data(work: Path, s: dict[str, Any]) -> tuple[Path, Path]:
    from fantasytalking.data.synthtalk import SynthConfig, write_synthtalk

    train, heldout = work / "synth-train", work / "synth-heldout"
    common = dict(size=s["size"], fps=float(s["fps"]))
    for out, split, clips, seed, frames in ((train, "train", s["train_clips"], s["seed"], s["frames"]),
                                            (heldout, "heldout", s["heldout_clips"], s["seed"] + 1, heldout_frames(s))):  # fmt: skip
        report = write_synthtalk(SynthConfig(out_dir=out, clips=clips, split=split, seed=seed, num_frames=frames,
                                             **common))  # fmt: skip
        print(report.summary(), flush=True)
    return train, heldout


def heldout_clips(heldout: Path, s: dict[str, Any]) -> list[dict[str, Any]]:
    """Each held-out clip: key, first frame (uint8), audio, frame-0 landmarks, truth opening and silence, and its
    SynthTalk identity id (None for shards without one)."""
    from fantasytalking.data import TalkingClipDataModule
    from fantasytalking.data.synthtalk import TRUTH_COLUMNS, read_truth

    truth = read_truth(heldout)
    dm = TalkingClipDataModule(str(heldout), batch_size=1, shuffle_buffer=1, num_frames=heldout_frames(s),
                               fields=("video", "audio", "landmarks"), random_window=False, drop_last=False)  # fmt: skip
    dm.setup("fit")
    out = []
    for batch in dm.train_dataloader():
        key = batch["key"][0]
        video = batch["video"][0]  # (3, F, H, W) in [-1, 1]
        frame = ((video[:, 0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        arr = truth[key][0]
        opening = arr[:, TRUTH_COLUMNS.index("open")]
        speaking = arr[:, TRUTH_COLUMNS.index("speaking")]
        real = ((video.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # (F, H, W, 3)
        out.append({"key": key, "image": frame, "audio": batch["audio"][0].numpy().astype(np.float32), "video": real,
                    "landmarks": batch["landmarks"][0, 0].numpy(), "truth_open": opening,
                    "silent": speaking <= 0, "identity": truth[key][1].get("identity_id")})  # fmt: skip
    return sorted(out, key=lambda c: c["key"])


# --------------------------------------------------------------------------------------------------- training


def train_command(name: str, root: Path, train: Path, s: dict[str, Any], extra: list[str]) -> tuple[list[str], Path]:
    """The finetune.py command of a training variant and the export it writes."""
    sub, stage, flags = TRAINING[name]
    preset = [
        "--model.init_args.backbone.vae", str(demo_vae_path(s)),
        "--model.init_args.backbone.seed", str(s["seed"]),
        "--model.init_args.objective.cache_dir", str(root / "encode-cache"),  # keys hold the config: shared safely
    ] if s["preset"] == "demo" else []  # fmt: skip
    shared = [
        "--config", str(CONFIGS / f"{s['preset']}.yaml"),
        *preset,
        "--data", "fantasytalking.data.TalkingClipDataModule",
        "--data.init_args.shards", str(train),
        "--data.init_args.num_frames", str(s["frames"]),
        "--data.init_args.batch_size", str(s["batch_size"]),
        "--data.init_args.fps", str(float(s["fps"])),
        "--trainer.max_steps", str(s["train_steps"]),
        "--trainer.accelerator", s["accelerator"],
        "--seed_everything", str(s["seed"]),
        *flags, *extra,
    ]  # fmt: skip
    out = root / name
    if sub == "stages":
        command = [sys.executable, str(FINETUNE), "stages", "--root", str(out), *shared]
        return command, out / "stage2" / "conditioning.safetensors"
    command = [sys.executable, str(FINETUNE), "fit", "--config", str(CONFIGS / str(stage)), *shared,
               "--trainer.default_root_dir", str(out)]  # fmt: skip
    return command, out / "conditioning.safetensors"


def run_training(name: str, root: Path, train: Path, s: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    command, export = train_command(name, root, train, s, extra)
    env = dict(os.environ)
    if s["accelerator"] == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.call(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    result = {"name": name, "command": command[1:], "seconds": round(seconds, 2), "exit_code": code,
              "export": str(export) if code == 0 and export.exists() else None}  # fmt: skip
    if result["export"] is None:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-15:]
        last = tail[-1].strip() if tail else "no output"
        result["error"] = f"training {name} failed (exit code {code}): {last}\n" + "\n".join(tail)
    print(f"trained {name} in {seconds:.1f} s (exit code {code})", flush=True)
    return result


# --------------------------------------------------------------------------------------------------- measures


def guarded(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, reason)`` when the measure fails or gives a non-finite number."""
    try:
        value = fn()
    except Exception as err:  # a measure failing on a noise video is a result, not a crash
        return None, f"{type(err).__name__}: {err}"[:300]
    if isinstance(value, float | int | np.floating) and not math.isfinite(float(value)):
        return None, f"non-finite value {value}"
    return (float(value) if isinstance(value, float | int | np.floating) else value), None


class Scorer:
    def __init__(self) -> None:
        self._landmark: Any = None
        self._landmark_error: str | None = None

    def landmark_lipsync(self, frames: np.ndarray, audio: np.ndarray, fps: float) -> float:
        import torch

        from fantasytalking.metrics import LandmarkLipSync

        if self._landmark_error is not None:  # the landmarker itself cannot be built: say so once per run
            raise RuntimeError(self._landmark_error)
        if self._landmark is None:
            metric = LandmarkLipSync()
            try:
                _ = metric.landmarker
            except Exception as err:  # recorded
                self._landmark_error = f"no landmarker: {type(err).__name__}: {err}"
                raise
            self._landmark = metric
        metric = self._landmark
        metric.reset()
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0  # (1, 3, F, H, W) in [0, 1]
        metric.update(video, torch.from_numpy(audio)[None], fps=float(fps), sample_rate=16000)
        return float(metric.compute()["lipsync_corr"])

    def score(self, frames: np.ndarray, clip: dict[str, Any], fps: float) -> tuple[dict[str, Any], dict[str, str]]:
        from fantasytalking.metrics import synthtalk as st

        truth = np.asarray(clip["truth_open"], np.float32)
        silent = np.asarray(clip["silent"], bool)
        opening, why = guarded(lambda: st.mouth_opening(frames))
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        if opening is None:
            values["lipsync"] = values["closed_in_silence"] = None
            reasons["lipsync"] = reasons["closed_in_silence"] = f"mouth opening: {why}"
        else:
            n = min(len(opening), len(truth))
            for name, fn in (("lipsync", lambda: st.lipsync_correlation(opening[:n], truth[:n])),
                             ("closed_in_silence", lambda: st.mouth_closed_fraction(opening[:n], silent[:n]))):  # fmt: skip
                values[name], why = guarded(fn)
                if why:
                    reasons[name] = why
        for name, fn in (
            ("landmark_lipsync", lambda: self.landmark_lipsync(frames, clip["audio"], fps)),
            ("identity_error", lambda: st.identity_error(frames, clip["image"])),
            ("head_motion", lambda: st.head_motion(frames)),
            ("motion_energy", lambda: st.motion_energy(frames)),
        ):
            values[name], why = guarded(fn)
            if why:
                reasons[name] = why
        return values, reasons


def row_fvd(pairs: list[tuple[np.ndarray, np.ndarray]], i3d: str | None) -> float:
    """FVD between a row's generated videos and the held-out clips they were made for (I3D by path).

    With a few dozen clips this is a small-sample FVD: comparable between rows of one run, not with papers.
    """
    import torch

    from fantasytalking.metrics import FVD

    if not i3d:
        raise RuntimeError("no I3D file: pass --i3d i3d_torchscript.pt (docs/evaluation.md names the file)")
    if not pairs:
        raise RuntimeError("no generated clip")
    shortest = min(min(len(f), len(r)) for f, r in pairs)
    # 16-frame clips as usual; shorter videos (quick mode) are cut in two so each side has >= 2 samples.
    clip = 16 if len(pairs) * (shortest // 16) >= 2 else max(shortest // 2, 1)
    metric = FVD(i3d_weights=i3d, clip_frames=clip)
    for fake, real in pairs:
        n = min(len(fake), len(real))
        for frames, is_real in ((fake[:n], False), (real[:n], True)):
            video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 255.0
            metric.update(video, real=is_real)  # (1, 3, F, H, W) in [0, 1]
    return float(metric.compute())


def summarise(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, _, _ in MEASURES:
        if name == "fvd":  # a distribution distance: one value per row (generate_rows), not a mean over clips
            continue
        vals = [c["measures"][name] for c in row.clips if c.get("measures", {}).get(name) is not None]
        out[name] = float(np.mean(vals)) if vals else None
        out[f"{name}_n"] = len(vals)
        if not vals:
            reasons = [c.get("reasons", {}).get(name) for c in row.clips]
            reasons = [r for r in reasons if r]
            out[f"{name}_null_reason"] = reasons[0] if reasons else "no generated clip"
    return out


# --------------------------------------------------------------------------------------------------- generation


def generate_rows(rows: list[Row], exports: dict[str, dict[str, Any]], clips: list[dict[str, Any]],
                  s: dict[str, Any]) -> None:  # fmt: skip
    from unittest import mock

    from PIL import Image

    from fantasytalking.training import load_into_pipeline
    from fantasytalking.training.builder import tiny_pipeline
    from fantasytalking.training.presets import demo_pipeline

    def new_pipeline() -> Any:
        if s["preset"] == "demo":  # the frozen random umT5 / CLIP come from the training seed
            return demo_pipeline(demo_vae_path(s), seed=s["seed"], conditioners=False)
        return tiny_pipeline(seed=s["seed"])

    scorer = Scorer()
    steps = int(s["steps"])
    partial = (0, max(steps // 2 - 1, 0))
    for row in rows:
        trained = exports[row.training]
        if trained.get("export") is None:
            row.errors.append(trained.get("error", f"no export for {row.training}"))
            row.summary = summarise(row)
            continue
        start = time.perf_counter()
        try:
            pipe = new_pipeline()
            load_into_pipeline(pipe, trained["export"])
            if s["device"] != "cpu":
                pipe.to(s["device"])
        except Exception as err:  # recorded, and the exit code says so
            row.errors.append(f"loading {trained['export']}: {type(err).__name__}: {err}")
            row.summary = summarise(row)
            continue
        has_motion = "motion" in pipe.conditioning
        generated: list[tuple[np.ndarray, np.ndarray]] = []
        for clip in clips:
            entry: dict[str, Any] = {"key": clip["key"]}
            kwargs: dict[str, Any] = dict(num_inference_steps=steps, max_edge=s["size"], fps=int(s["fps"]),
                                          max_frames=heldout_frames(s), seed=s["seed"], progress=False,
                                          segment_frames=0,  # one clip, as the demo (docs/design.md)
                                          audio_guidance_steps=partial if row.guidance == "partial" else None)  # fmt: skip
            if row.motion is not None and has_motion:
                kwargs.update(face_motion=row.motion, body_motion=row.motion)
            landmarks = clip["landmarks"]
            try:
                # SynthTalk faces are below dlib's detection size: the truth landmarks stand in for detection.
                with mock.patch("fantasytalking.face.detect_face_landmarks", lambda rgb, _lm=landmarks: (None, _lm)):
                    out = pipe(Image.fromarray(clip["image"]), clip["audio"], **kwargs)
            except Exception as err:  # recorded
                entry["error"] = f"{type(err).__name__}: {err}"
                row.errors.append(f"{clip['key']}: {entry['error']}\n{traceback.format_exc(limit=3)}")
                row.clips.append(entry)
                continue
            entry["frames"] = int(out.frames.shape[0])
            entry["measures"], entry["reasons"] = scorer.score(out.frames, clip, float(out.fps))
            row.clips.append(entry)
            generated.append((out.frames, clip["video"]))
        row.summary = summarise(row)
        row.summary["fvd"], why = guarded(lambda g=generated: row_fvd(g, s.get("i3d")))
        row.summary["fvd_n"] = len(generated)
        if why:
            row.summary["fvd_null_reason"] = why
        row.summary["seconds"] = round(time.perf_counter() - start, 2)
        print(f"generated {row.name}: {len(clips)} clip(s) in {row.summary['seconds']:.1f} s", flush=True)
        del pipe


# --------------------------------------------------------------------------------------------------- report


def new_record_stem(out: Path, name: str) -> Path:
    """``<out>/<name>`` for a new record's ``.json`` / ``.md``, or ``<name>-2``, ``-3``... when a record of that name
    exists: a record is never overwritten."""
    out.mkdir(parents=True, exist_ok=True)
    stem, n = out / name, 1
    while stem.with_suffix(".json").exists() or stem.with_suffix(".md").exists():
        n += 1
        stem = out / f"{name}-{n}"
    return stem


def file_sha256(path: Path) -> str:
    """The sha256 of a file (a model export: which weights a record measured), read once per process for each
    version of the file (its size and modification time: a file replaced at the same path is read again)."""
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from fantasytalking.loading.files import file_sha256 as sha256

    return sha256(path)


def commit() -> str:
    try:
        # "+dirty" when the working tree differs from the commit (a record of uncommitted code says so)
        return subprocess.check_output(["git", "describe", "--always", "--dirty=+dirty", "--abbrev=7"],
                                       text=True, cwd=ROOT, stderr=subprocess.DEVNULL).strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows (often only "x86_64")."""
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(s: dict[str, Any]) -> str:
    import torch

    if s["device"] != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({cpu_name()}, {os.cpu_count()} cores)"


def fmt(value: Any) -> str:
    return "null" if value is None else f"{value:.3f}"


PAPER_TABLE = """Paper, Table 4 (wild set; FVD ↓ / Sync-C ↑ / Sync-D ↓ / IDC ↑ / SD ↑): clip-level only 492.85 / 1.98 /
11.21 / 0.986 / 13.66; frame-level only 534.39 / 3.54 / 9.02 / 0.987 / 8.22; without identity 510.62 / 3.06 / 10.15 /
0.945 / 12.96; full 483.11 / 3.15 / 9.69 / 0.989 / 13.78."""


def markdown(report: dict[str, Any]) -> str:
    mode = report["mode"]
    lines = [
        f"# Variant benchmark ({mode} mode), SynthTalk held-out split",
        "",
        f"- date: {report['date']}; commit: {report['commit']}; device: {report['device']}; "
        f"torch {report['torch']}; wall time {report['wall_seconds']:.1f} s",
        "- settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()),
        "",
        "| variant | " + " | ".join(header for _, _, header in MEASURES) + " | clips |",
        "|---|" + "---:|" * (len(MEASURES) + 1),
    ]
    group = None
    for row in report["rows"]:
        if group is not None and row["group"] != group:
            lines.append("| | " + " | ".join("" for _ in MEASURES) + " | |")
        group = row["group"]
        summary = row["summary"]
        cells = [fmt(summary.get(name)) for name, _, _ in MEASURES]
        n = sum(1 for c in row["clips"] if "measures" in c)
        status = f"{n}/{report['settings']['heldout_clips']}" + (" (errors)" if row["errors"] else "")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {status} |")
    nulls = sorted({(name, row["summary"][f"{name}_null_reason"]) for row in report["rows"]
                    for name, _, _ in MEASURES if row["summary"].get(f"{name}_null_reason")})  # fmt: skip
    lines += [
        "",
        "Lip sync r: Pearson correlation of the mouth opening measured from the pixels with the true opening "
        "(~ Sync-C). Identity error: mean absolute difference of identity features to the reference frame "
        "(~ 1 - IDC). Head motion and motion energy: dynamics (~ SD). Means over the held-out clips; null: the "
        "measure failed on every clip (reasons below).",
    ]
    if mode == "quick":
        lines += ["", "Quick mode: random tiny models trained a few steps make noise videos; these values check that "
                  "the benchmark runs, they say nothing about the variants."]  # fmt: skip
    if nulls:
        lines += ["", "Null measures:", ""] + [f"- {name}: {reason}" for name, reason in nulls]
    if report["failures"]:
        lines += ["", "Failures:", ""] + [f"- {f.splitlines()[0]}" for f in report["failures"]]
    lines += ["", PAPER_TABLE, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full mode (a GPU): bigger settings, same code path")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    parser.add_argument("--work", type=Path, default=None, help="working folder for data and runs (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--jobs", type=int, default=None, help="training runs at once (default: 2 on CPU, 1 on GPU)")
    parser.add_argument("--train-arg", action="append", default=[], help="extra flag for every training run")
    parser.add_argument("--i3d", default=None, help="i3d_torchscript.pt for the FVD column (null without it)")
    for key, value in QUICK.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"quick: {value}, full: {FULL[key]}")  # fmt: skip
    args = parser.parse_args(argv)
    if args.preset not in (None, "tiny", "demo"):
        parser.error("--preset must be tiny or demo")
    settings = dict(FULL if args.full else QUICK)
    settings["i3d"] = args.i3d
    for key in QUICK:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return args, settings


def main(argv: list[str] | None = None) -> int:
    args, s = parse_args(argv)
    mode = "full" if args.full else "quick"
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="variants-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        train, heldout = make_data(work, s)
        clips = heldout_clips(heldout, s)
        jobs = args.jobs or (2 if s["accelerator"] == "cpu" else 1)
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            results = list(pool.map(lambda n: run_training(n, work / "runs", train, s, args.train_arg), TRAINING))
        exports = {r["name"]: r for r in results}
        rows = make_rows()
        generate_rows(rows, exports, clips, s)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    import torch

    failures = [r["error"] for r in results if r.get("error")]
    failures += [e for row in rows for e in row.errors if not e.startswith("training ")]
    today = dt.date.today().isoformat()
    report = {
        "benchmark": "variants", "mode": mode, "date": today, "commit": commit(), "device": device_name(s),
        "torch": torch.__version__, "python": platform.python_version(),
        "wall_seconds": round(time.perf_counter() - start, 2), "settings": s, "train_args": args.train_arg,
        "training": results, "rows": [asdict(row) for row in rows], "failures": failures,
    }  # fmt: skip
    stem = new_record_stem(args.out, f"variants-{mode}-{today}")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and {stem}.md in {report['wall_seconds']:.1f} s", flush=True)
    if failures:
        print(f"{len(failures)} failure(s):\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
