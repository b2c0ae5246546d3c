"""examples/finetune.py: the YAML configs parse, and both stages run end to end on shards made from a generated clip."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from skimage.data import astronaut

from fantasytalking.training import load_into_pipeline, read_export, tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "finetune.py"
CONFIGS = ROOT / "examples" / "configs"
SR = 16_000


def _finetune_module():
    spec = importlib.util.spec_from_file_location("finetune_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
@pytest.mark.parametrize(
    "configs",
    [["stage1.yaml"], ["stage2.yaml"], ["stage1.yaml", "fsdp.yaml"], ["stage2.yaml", "tiny.yaml"]],
)
def test_configs_parse(configs, capsys):
    args = ["fit"] + [a for c in configs for a in ("--config", str(CONFIGS / c))] + ["--print_config"]
    with pytest.raises(SystemExit) as done:
        _finetune_module().lightning_cli(args)
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "fantasytalking.training.Stage" in printed
    if "fsdp.yaml" in configs:
        assert "WanFSDPStrategy" in printed and "mode: lora" in printed
    if "tiny.yaml" in configs:
        assert "preset: tiny" in printed and "SyntheticTalkingDataModule" in printed


def talking_clip(seconds: float = 2.0, fps: int = 25, size: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A speaking astronaut: a dark mouth opening with a syllable-rate envelope, the head swaying, and a
    voiced tone following the same envelope. Returns frames ``(N, S, S, 3)`` and 16 kHz audio ``(T,)``."""
    base = np.asarray(Image.fromarray(astronaut()[0:400, 56:456]).resize((size, size), Image.Resampling.BICUBIC))
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.abs(np.sin(2 * np.pi * 2.0 * t)) ** 0.7
    voice = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420)))
    audio = (0.15 * envelope * voice).astype(np.float32)
    s = size / 400
    mx, my, mw = (223 - 56) * s, 150 * s, 40 * s  # the astronaut's mouth
    frames = []
    for i in range(int(seconds * fps)):
        img = Image.fromarray(base.copy())
        h = 2 + envelope[int(i / fps * SR)] * 10 * s
        ImageDraw.Draw(img).ellipse([mx - 0.35 * mw, my - h / 2, mx + 0.35 * mw, my + h / 2], fill=(60, 20, 30))
        frames.append(np.roll(np.asarray(img), (round(3 * np.cos(i / 13)), round(4 * np.sin(i / 9))), axis=(0, 1)))
    return np.stack(frames), audio


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from fantasytalking.data import preprocess
    from fantasytalking.face import DlibLandmarker
    from fantasytalking.io import write_video

    root = tmp_path_factory.mktemp("clips")
    frames, audio = talking_clip()
    write_video(root / "talk.mp4", frames, 25, audio=audio, sample_rate=SR)
    out = root / "shards"
    report = preprocess([root / "talk.mp4"], out, landmarker=DlibLandmarker(), size=32, num_frames=9, fps=23.0,
                        face_size=32, landmarks="dlib", clips_per_shard=2, min_face_px=32.0)  # fmt: skip
    assert report.clips_written >= 2, report
    return out


def test_both_stages_on_shards_write_checkpoints(shards, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable, str(SCRIPT), "stages", "--config", str(CONFIGS / "tiny.yaml"), "--root", str(tmp_path),
        "--data", "fantasytalking.data.TalkingClipDataModule", "--data.init_args.shards", str(shards),
        "--data.init_args.num_frames", "9", "--trainer.max_steps", "2",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])

    for stage in ("stage1", "stage2"):
        ckpt = torch.load(tmp_path / stage / "final.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 2 and ckpt["fantasytalking"]["stage"] == stage
        assert (tmp_path / stage / "lightning_logs" / "version_0" / "config.yaml").is_file()
    stage2 = torch.load(tmp_path / "stage2" / "final.ckpt", map_location="cpu", weights_only=True)
    assert stage2["fantasytalking"]["config"]["init_from"] == str(tmp_path / "stage1" / "final.ckpt")
    assert stage2["fantasytalking"]["config"]["audio_mode"] == "frame"
    # the dataset's motion statistics went into the model
    stats = json.loads((shards / "stats.json").read_text())
    raw_low = stage2["state_dict"]["conditioning.conditioners.motion.raw_low"]
    torch.testing.assert_close(raw_low, torch.tensor([stats["face"]["p1"], stats["body"]["p1"]]))

    # The export of stage two loads into the inference pipeline.
    _, config = read_export(tmp_path / "stage2" / "conditioning.safetensors")
    assert config["conditioners"]["face"]["encoder_spec"] == "dlib"
    pipe = tiny_pipeline()
    load_into_pipeline(pipe, tmp_path / "stage2" / "conditioning.safetensors")
    assert pipe.conditioning.names == ["audio", "face", "motion"]
    # stats.json's quantile tables gave the motion conditioner its request scale (request 0.5 = the median clip)
    scale = config["conditioners"]["motion"]["request_scale"]
    assert len(scale) == len(stats["face"]["quantiles"]) and scale[0] == [0.0, 0.0] and scale[-1] == [1.0, 1.0]
    assert all(a <= b for row, nxt in itertools.pairwise(scale) for a, b in zip(row, nxt, strict=True))
    assert pipe.conditioning["motion"].request_scale.tolist() == scale

    # ... and so does the export command's output, with the scale refitted from a stats.json on request.
    out = tmp_path / "plain.safetensors"
    code = _finetune_module().main(["export", str(tmp_path / "stage2" / "final.ckpt"), str(out)])
    assert code == 0 and out.is_file()
    scaled = tmp_path / "scaled.safetensors"
    code = _finetune_module().main(["export", str(tmp_path / "stage2" / "final.ckpt"), str(scaled),
                                    "--motion-stats", str(shards / "stats.json")])  # fmt: skip
    assert code == 0 and read_export(scaled)[1]["conditioners"]["motion"]["request_scale"] == scale
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["plain.safetensors", "scaled.safetensors"]
    code = _finetune_module().main(["export", str(tmp_path / "stage2" / "final.ckpt"), str(tmp_path / "x.safetensors"),
                                    "--motion-stats", str(tmp_path / "missing.json")])  # fmt: skip
    assert code == 2 and not (tmp_path / "x.safetensors").exists()
    (tmp_path / "list.json").write_text("[1, 2]")  # JSON, but not a stats.json object: one-line error, no file
    code = _finetune_module().main(["export", str(tmp_path / "stage2" / "final.ckpt"), str(tmp_path / "x.safetensors"),
                                    "--motion-stats", str(tmp_path / "list.json")])  # fmt: skip
    assert code == 2 and not (tmp_path / "x.safetensors").exists()


def test_export_model_flags_rebuild_the_exported_conditioners(monkeypatch):
    """The no-argument run fine-tunes the packaged model with demo.yaml: the flags must rebuild its face path."""
    module = _finetune_module()
    packaged = ROOT / "src" / "fantasytalking" / "assets" / "demo" / "model.safetensors"
    face = read_export(packaged)[1]["conditioners"]["face"]
    assert module.export_model_flags(packaged) == [
        "--model.init_args.face.feature_tokens", str(face.get("feature_tokens", 1))]  # fmt: skip
    # an export trained without the face conditioner (the paper's ablation) is rebuilt without it
    import fantasytalking.training.export as export

    monkeypatch.setattr(export, "read_export_config", lambda path: {"conditioners": {"motion": {}}})
    assert module.export_model_flags(packaged) == ["--model.init_args.face", "null"]


@pytest.mark.slow
def test_no_arguments_fine_tunes_the_packaged_demo_and_scores_a_sample(tmp_path):
    """``examples/finetune.py`` with no arguments (here with fewer clips and steps): both stages from the packaged
    demo model on fresh SynthTalk shards, then a held-out sample video and its measures."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(SCRIPT), "--root", str(tmp_path / "run"), "--clips", "4", "--steps", "2",
               "--sample-steps", "2"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    run = tmp_path / "run"
    for stage in ("stage1", "stage2"):
        ckpt = torch.load(run / stage / "final.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 2 and ckpt["fantasytalking"]["stage"] == stage
    metrics = json.loads((run / "sample_metrics.json").read_text())
    assert metrics["training"] == {"clips": 4, "steps_per_stage": 2, "seed": 2026, "root": str(run)}
    assert -1.0 <= metrics["lipsync"] <= 1.0 and metrics["identity_error"] >= 0.0
    assert (run / "sample.mp4").stat().st_size > 0 and "sample video:" in done.stdout
    # the same clip through the model before the fine-tune, for comparison: both measured, both saved
    before = metrics["before"]
    assert set(before) == {k for k in metrics if k not in ("before", "clip", "training")}
    assert -1.0 <= before["lipsync"] <= 1.0 and before != {k: metrics[k] for k in before}
    assert (run / "sample_before.mp4").stat().st_size > 0


@pytest.fixture(scope="module")
def random_demo(tmp_path_factory):
    """A demo folder in the packaged layout with RANDOM demo-preset weights."""
    from fantasytalking.testing import make_random_demo

    return make_random_demo(tmp_path_factory.mktemp("demo"), seed=0, steps=1)


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        ("no_vae", "vae/config.json"),  # was: 17 s of data, then a jsonargparse traceback in the stage-one process
        ("card_without_clip_frames", "'clip_frames'"),  # was: KeyError
        ("card_other_seed", "do not match"),  # was: silently trained on frozen encoders the model never saw
        ("demo_dir_missing", "does not exist or is not a folder"),
        ("root_is_file", "is a file, not a folder"),  # was: NotADirectoryError
        ("zero_clips", "--clips must be at least 1"),  # was: an InputError traceback
        ("zero_sample_steps", "--sample-steps must be at least 1"),  # was: a ValueError after both stages
        ("data_fails", "espeak-ng failed"),  # e.g. espeak-ng missing: was a traceback
    ],
)
def test_quickstart_refuses_bad_input_in_one_line_before_making_data(breakage, needle, random_demo, tmp_path,
                                                                     capsys, monkeypatch):  # fmt: skip
    import shutil

    from fantasytalking.errors import InputError

    demo = tmp_path / "demo"
    shutil.copytree(random_demo, demo)
    card = json.loads((demo / "card.json").read_text())
    root, extra = tmp_path / "run", []
    if breakage == "no_vae":
        shutil.rmtree(demo / "vae")
    elif breakage == "card_without_clip_frames":
        del card["clip_frames"]
    elif breakage == "card_other_seed":
        card["seed"] += 1
    elif breakage == "demo_dir_missing":
        shutil.rmtree(demo)
    elif breakage == "root_is_file":
        root.write_text("not a folder")
    elif breakage == "zero_clips":
        extra = ["--clips", "0"]
    elif breakage == "zero_sample_steps":
        extra = ["--sample-steps", "0"]
    elif breakage == "data_fails":
        import fantasytalking.data.synthtalk as synthtalk

        def fail(config):
            raise InputError("espeak-ng failed to speak 'x'; check that espeak-ng-data is installed")

        monkeypatch.setattr(synthtalk, "write_synthtalk", fail)
    if breakage.startswith("card"):
        (demo / "card.json").write_text(json.dumps(card))
    code = _finetune_module().main(["--root", str(root), "--demo-dir", str(demo), "--clips", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (root / "stage1").exists() and (breakage == "root_is_file" or not (root / "shards").exists())


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_shows_the_quickstart_options_and_the_other_modes(flag, capsys):
    """``finetune.py --help`` describes what the script does without arguments (it showed LightningCLI's help)."""
    with pytest.raises(SystemExit) as done:
        _finetune_module().main([flag])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "--clips" in out and "--demo-dir" in out and "--sample-steps" in out
    assert "finetune.py stages" in out and "fit|validate|test" in out and "finetune.py export" in out
