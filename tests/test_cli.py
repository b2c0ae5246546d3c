"""`fantasytalking generate` on a tiny weight folder: the mp4 it writes, and every bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from fantasytalking.cli import main
from fantasytalking.io import probe_video
from fantasytalking.loading import load_fantasytalking_state, save_fantasytalking_state
from fantasytalking.testing import make_tiny_weights

FAST = ["--steps", "2", "--size", "64", "--max-frames", "13", "--quiet"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("w") / "weights", layout="original")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    root = tmp_path_factory.mktemp("files")
    out = {"image": root / "face.png", "audio": root / "speech.wav"}
    Image.fromarray(data.astronaut()).crop((100, 0, 356, 256)).save(out["image"])
    t = np.arange(int(0.5 * 16000)) / 16000
    sf.write(out["audio"], (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    long_t = np.arange(int(2.0 * 44100)) / 44100
    out["long_audio"] = root / "long.wav"
    sf.write(out["long_audio"], np.stack([np.sin(2 * np.pi * 200 * long_t)] * 2, 1).astype(np.float32), 44100)
    out["gray"] = root / "gray.png"
    Image.fromarray(data.camera()).save(out["gray"])
    out["rgba"] = root / "rgba.png"
    Image.open(out["image"]).convert("RGBA").save(out["rgba"])
    out["blank"] = root / "blank.png"
    Image.new("RGB", (256, 256), (120, 120, 120)).save(out["blank"])
    out["small"] = root / "small.png"
    Image.open(out["image"]).resize((24, 24)).save(out["small"])
    out["not_image"] = root / "notes.png"
    out["not_image"].write_text("not an image")
    out["empty_audio"] = root / "empty.wav"
    sf.write(out["empty_audio"], np.zeros(0, np.float32), 16000)
    out["bad_audio"] = root / "bad.wav"
    out["bad_audio"].write_bytes(b"RIFF....WAVEjunk")
    return out


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["generate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_mp4_with_expected_streams(weights, files, tmp_path, capsys):
    out = tmp_path / "talk.mp4"
    code, stdout, _ = run(["--weights", str(weights), "--image", str(files["image"]), "--audio",
                           str(files["audio"]), "--output", str(out), *FAST], capsys)
    assert code == 0 and str(out) in stdout
    info = probe_video(out)
    # 0.5 s at 23 fps: min(int(23 * 0.5 // 4) * 4 + 5, 13) = 13 frames
    assert info["num_frames"] == 13 and abs(info["video_duration"] - 13 / 23) < 1e-3
    assert info["audio_codec"] == "aac" and abs(info["audio_duration"] - 0.5) < 0.07  # audio shorter than the clip
    assert out.with_suffix(".json").exists()


def test_cli_long_audio_says_what_is_used_and_converts_images(weights, files, tmp_path, capsys):
    for name in ("gray", "rgba"):
        out = tmp_path / f"{name}.mp4"
        code, _, err = run(["--weights", str(weights), "--image", str(files[name]), "--audio",
                            str(files["long_audio"]), "--output", str(out), *FAST], capsys)
        assert code == 0, err
        assert "audio is 2.0 s; this clip uses the first 0.6 s (13 frames at 23 fps)" in err
        assert probe_video(out)["num_frames"] == 13


def corrupt_weights(kind: str, weights: Path, tmp: Path) -> Path:
    copy = tmp / "weights"
    shutil.copytree(weights, copy)
    wan = copy / "Wan2.1-I2V-14B-720P"
    if kind == "missing-file":
        (wan / "Wan2.1_VAE.pth").unlink()
    elif kind == "missing-ckpt":
        (copy / "fantasytalking_model.ckpt").unlink()
    elif kind == "truncated-shard":
        shard = wan / "diffusion_pytorch_model-00001-of-00002.safetensors"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif kind == "truncated-ckpt":
        ckpt = copy / "fantasytalking_model.ckpt"
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif kind == "wrong-size-ckpt":
        state = load_fantasytalking_state(copy / "fantasytalking_model.ckpt")
        wider = {k: torch.zeros(v.shape[0] * 2, v.shape[1]) if k.startswith("blocks.") else v for k, v in state.items()}
        save_fantasytalking_state(wider, copy / "fantasytalking_model.ckpt")
    return copy


BAD_INPUTS = {
    "missing image": ({"image": "nope.png"}, "nope.png"),
    "unreadable image": ({"image": "not_image"}, "notes.png"),
    "blank image": ({"image": "blank"}, "blank.png"),
    "small image": ({"image": "small"}, "24x24"),
    "missing audio": ({"audio": "nope.wav"}, "nope.wav"),
    "unreadable audio": ({"audio": "bad_audio"}, "bad.wav"),
    "empty audio": ({"audio": "empty_audio"}, "empty.wav"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_fail_in_one_line_and_write_nothing(case, weights, files, tmp_path, capsys):
    override, needle = BAD_INPUTS[case]
    args = {"image": files["image"], "audio": files["audio"]}
    for key, value in override.items():
        args[key] = files.get(value, tmp_path / value)
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    code, _, err = run(["--weights", str(weights), "--image", str(args["image"]), "--audio", str(args["audio"]),
                        "--output", str(out), *FAST], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(("flag", "value", "needle"), [("--motion-gain", "2", "no motion conditioner"),
                                                       ("--face-scale", "1", "no face conditioner")])
def test_conditioner_flags_need_their_conditioner(flag, value, needle, weights, files, tmp_path, capsys):
    """The release's weights have neither a motion nor a face conditioner: their flags fail in one line."""
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    code, _, err = run(["--weights", str(weights), "--image", str(files["image"]), "--audio", str(files["audio"]),
                        "--output", str(out), flag, value, *FAST], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and needle in err and flag in err, err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(("face_image", "needle"), [("nope.png", "nope.png"), ("image", "no face conditioner")])
def test_face_image_fails_in_one_line_and_writes_nothing(face_image, needle, weights, files, tmp_path, capsys):
    """A missing --face-image is found before any weight loads; a real one on the release's weights (no face
    conditioner) says so."""
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    code, _, err = run(["--weights", str(weights), "--image", str(files["image"]), "--audio", str(files["audio"]),
                        "--face-image", str(files.get(face_image, tmp_path / face_image)), "--output", str(out),
                        *FAST], capsys)  # fmt: skip
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("missing-file", "Wan2.1_VAE.pth"), ("missing-ckpt", "fantasytalking_model.ckpt"),
     ("truncated-shard", "diffusion_pytorch_model-00001-of-00002.safetensors"),
     ("truncated-ckpt", "fantasytalking_model.ckpt"), ("wrong-size-ckpt", "width 48")],
)
def test_bad_weights_fail_in_one_line_and_write_nothing(kind, needle, weights, files, tmp_path, capsys):
    bad = corrupt_weights(kind, weights, tmp_path)
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    code, _, err = run(["--weights", str(bad), "--image", str(files["image"]), "--audio", str(files["audio"]),
                        "--output", str(out), *FAST], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert list(out.parent.iterdir()) == []


def test_existing_output_needs_overwrite(weights, files, tmp_path, capsys):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    args = ["--weights", str(weights), "--image", str(files["image"]), "--audio", str(files["audio"]),
            "--output", str(out), *FAST]
    code, _, err = run(args, capsys)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me" and not out.with_suffix(".json").exists()
    code, _, _ = run([*args, "--overwrite"], capsys)
    assert code == 0 and probe_video(out)["num_frames"] == 13


def test_missing_weights_folder(files, tmp_path, capsys):
    code, _, err = run(["--weights", str(tmp_path / "none"), "--image", str(files["image"]), "--audio",
                        str(files["audio"]), "--output", str(tmp_path / "o.mp4"), *FAST], capsys)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "fantasytalking.cli", "generate", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ["--weights", "--image", "--audio", "--prompt", "--negative-prompt", "--output", "--steps",
                   "--size", "--fps", "--max-frames", "--seed", "--prompt-cfg", "--audio-cfg", "--audio-scale",
                   "--device", "--dtype", "--overwrite", "--offload", "--audio-guidance-steps"]:
        assert option in result.stdout
