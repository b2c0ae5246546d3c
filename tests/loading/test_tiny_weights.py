"""The tiny weights folder: complete, byte-deterministic per seed, and usable by the stock diffusers pipeline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from fantasytalking.errors import InputError
from fantasytalking.testing import make_tiny_weights
from fantasytalking.testing.__main__ import main


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_byte_deterministic_per_seed(tmp_path, layout):
    a = _digest(make_tiny_weights(tmp_path / "a", layout, seed=3))
    b = _digest(make_tiny_weights(tmp_path / "b", layout, seed=3))
    c = _digest(make_tiny_weights(tmp_path / "c", layout, seed=4))
    assert a == b
    assert a["fantasytalking_model.ckpt"] != c["fantasytalking_model.ckpt"]
    assert "README.txt" in a and "random" in (tmp_path / "a" / "README.txt").read_text().lower()


def test_original_layout_files(tmp_path):
    root = make_tiny_weights(tmp_path, "original")
    wan = root / "Wan2.1-I2V-14B-720P"
    expected = {
        "config.json", "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.json",
        "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    }  # fmt: skip
    assert expected <= {p.name for p in wan.iterdir()}
    t5 = torch.load(str(wan / "models_t5_umt5-xxl-enc-bf16.pth"), weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in t5.values())
    clip = torch.load(str(wan / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"), weights_only=True)
    assert {"log_scale", "visual.head"} <= set(clip) and any(k.startswith("textual.") for k in clip)


def test_cli(tmp_path, capsys):
    assert main(["make-tiny-weights", str(tmp_path / "w"), "--layout", "diffusers", "--seed", "1"]) == 0
    assert (tmp_path / "w" / "Wan2.1-I2V-14B-720P-Diffusers" / "model_index.json").is_file()
    assert str(tmp_path / "w") in capsys.readouterr().out
    with pytest.raises(InputError):
        make_tiny_weights(tmp_path / "x", "other")


def test_diffusers_layout_runs_in_the_stock_pipeline(tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    root = make_tiny_weights(tmp_path, "diffusers")
    pipe = WanImageToVideoPipeline.from_pretrained(str(root / "Wan2.1-I2V-14B-720P-Diffusers"), local_files_only=True)
    video = pipe(
        image=Image.new("RGB", (32, 32), (120, 80, 40)), prompt="a person talking", negative_prompt="",
        height=32, width=32, num_frames=5, num_inference_steps=2, guidance_scale=1.0, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).frames  # fmt: skip
    assert video.shape == (1, 5, 3, 32, 32) and torch.isfinite(video).all()
