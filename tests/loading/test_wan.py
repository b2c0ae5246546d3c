"""Wan DiT and VAE: both layouts load to identical models; every broken checkpoint names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fantasytalking.errors import WeightsError
from fantasytalking.loading import detect_wan_layout, load_wan_transformer, load_wan_vae
from fantasytalking.testing import make_tiny_weights

WAN = "Wan2.1-I2V-14B-720P"
SHARD1 = "diffusion_pytorch_model-00001-of-00002.safetensors"
SHARD2 = "diffusion_pytorch_model-00002-of-00002.safetensors"
INDEX = "diffusion_pytorch_model.safetensors.index.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_weights(root / "o", "original", seed=0)
    make_tiny_weights(root / "d", "diffusers", seed=0)
    return {"original": root / "o" / WAN, "diffusers": root / "d" / f"{WAN}-Diffusers"}


@pytest.fixture
def wan(tmp_path) -> Path:
    """A fresh original-layout Wan folder a test may damage."""
    return make_tiny_weights(tmp_path, "original") / WAN


def _dit_inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 36, 3, 8, 8, generator=g),  # [B, 16 + 4 + 16, F, H/8, W/8]
        torch.tensor([700.0]),
        torch.randn(1, 512, 32, generator=g),  # text tokens, padded to 512
        torch.randn(1, 5, 32, generator=g),  # CLIP tokens
    )


def test_layout_detection(tiny):
    assert detect_wan_layout(tiny["original"]) == "original"
    assert detect_wan_layout(tiny["diffusers"]) == "diffusers"
    assert detect_wan_layout(tiny["diffusers"] / "transformer") == "diffusers"


def test_dit_layouts_load_identically(tiny):
    a = load_wan_transformer(tiny["original"], dtype=torch.float32)
    b = load_wan_transformer(tiny["diffusers"], dtype=torch.float32)
    c = load_wan_transformer(tiny["diffusers"] / "transformer", dtype=torch.float32)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not a.training and a.device.type == "cpu"
    with torch.no_grad():
        out_a, out_b, out_c = (m(*_dit_inputs()).sample for m in (a, b, c))
    assert out_a.shape == (1, 16, 3, 8, 8)
    assert torch.equal(out_a, out_b) and torch.equal(out_a, out_c)


def test_dit_dtype_keeps_diffusers_fp32_modules(tiny):
    model = load_wan_transformer(tiny["original"], dtype=torch.bfloat16)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.blocks[0].norm2.weight.dtype == torch.float32  # _keep_in_fp32_modules, as diffusers does
    assert model.scale_shift_table.dtype == torch.float32
    assert not [n for n, p in model.named_parameters() if p.device.type == "meta"]


def test_vae_layouts_load_identically(tiny):
    a = load_wan_vae(tiny["original"], dtype=torch.float32)
    b = load_wan_vae(tiny["diffusers"], dtype=torch.float32)
    assert a.config.base_dim == 8 and a.config.z_dim == 16 and list(a.config.dim_mult) == [1, 2, 4, 4]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    video = torch.randn(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        za, zb = a.encode(video).latent_dist.mode(), b.encode(video).latent_dist.mode()
        assert za.shape == (1, 16, 2, 2, 2)  # stride 4x8x8 (causal: 1 + 4k frames)
        assert torch.equal(za, zb)
        assert torch.equal(a.decode(za).sample, b.decode(zb).sample)


# ---------------------------------------------------------------------------------------------------------------
# Broken DiT checkpoints
# ---------------------------------------------------------------------------------------------------------------


def _edit_shard(folder: Path, name: str, edit) -> None:
    """Apply ``edit(state)`` to one shard and keep the index in step with it."""
    state = load_file(str(folder / name))
    edit(state)
    save_file(state, str(folder / name), metadata={"format": "pt"})
    index = json.loads((folder / INDEX).read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != name} | dict.fromkeys(state, name)
    (folder / INDEX).write_text(json.dumps(index))


def _error(folder: Path, loader=load_wan_transformer) -> str:
    with pytest.raises(WeightsError) as info:
        loader(folder, dtype=torch.float32)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_renamed_dit_tensor_is_named(wan):
    _edit_shard(
        wan,
        SHARD2,
        lambda s: s.update({"blocks.1.cross_attn.k_image.weight": s.pop("blocks.1.cross_attn.k_img.weight")}),
    )
    message = _error(wan)
    assert "1 missing (blocks.1.cross_attn.k_img.weight)" in message
    assert "1 unexpected (blocks.1.cross_attn.k_image.weight)" in message
    assert str(wan) in message


def test_missing_dit_tensor_is_named(wan):
    _edit_shard(wan, SHARD1, lambda s: s.pop("blocks.0.norm3.bias"))
    assert "1 missing (blocks.0.norm3.bias)" in _error(wan)


def test_reshaped_dit_tensor_is_named(wan):
    _edit_shard(wan, SHARD2, lambda s: s.update({"blocks.1.self_attn.q.weight": torch.zeros(24, 12)}))
    assert "blocks.1.self_attn.q.weight: expected [24, 24], got [24, 12]" in _error(wan)


def test_shard_and_index_disagreeing_is_named(wan):
    state = load_file(str(wan / SHARD2))
    state.pop("blocks.1.ffn.2.bias")
    save_file(state, str(wan / SHARD2))  # index still lists it
    message = _error(wan)
    assert "blocks.1.ffn.2.bias" in message and INDEX in message


def test_truncated_shard_names_the_file(wan):
    data = (wan / SHARD2).read_bytes()
    (wan / SHARD2).write_bytes(data[: len(data) // 2])
    message = _error(wan)
    assert str(wan / SHARD2) in message and "re-download" in message


def test_missing_shard_names_the_file(wan):
    (wan / SHARD2).unlink()
    assert SHARD2 in _error(wan)


def test_shards_without_index_load(wan, tiny):
    (wan / INDEX).unlink()
    model = load_wan_transformer(wan, dtype=torch.float32)
    reference = load_wan_transformer(tiny["original"], dtype=torch.float32)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_wrong_size_checkpoint_is_clear(wan):
    # config.json of a bigger model next to the tiny shards (as when shards and config come from different sizes)
    config = json.loads((wan / "config.json").read_text())
    (wan / "config.json").write_text(json.dumps(config | {"dim": 48, "num_heads": 4, "num_layers": 3}))
    message = _error(wan)
    assert "do not match the model" in message and "mis-shaped" in message and "missing (blocks.2." in message
    assert "Wan-AI/Wan2.1-I2V-14B-720P" in message and "dim 48, 3 layers" in message


def test_text_to_video_checkpoint_is_refused(wan):
    config = json.loads((wan / "config.json").read_text())
    (wan / "config.json").write_text(json.dumps(config | {"model_type": "t2v"}))
    message = _error(wan)
    assert "not an image-to-video model" in message and "Wan2.1-I2V-14B-720P" in message


def test_dit_without_image_weights_is_refused(wan):
    _edit_shard(wan, SHARD1, lambda s: [s.pop(k) for k in list(s) if k.startswith("img_emb.")])
    assert "no image-conditioning weights" in _error(wan)


def test_diffusers_layout_missing_tensor_is_named(tmp_path):
    folder = make_tiny_weights(tmp_path, "diffusers") / f"{WAN}-Diffusers" / "transformer"
    index = json.loads((folder / INDEX).read_text())
    shard = index["weight_map"]["blocks.1.attn2.add_v_proj.weight"]
    state = load_file(str(folder / shard))
    state.pop("blocks.1.attn2.add_v_proj.weight")
    save_file(state, str(folder / shard))
    index["weight_map"].pop("blocks.1.attn2.add_v_proj.weight")
    (folder / INDEX).write_text(json.dumps(index))
    assert "1 missing (blocks.1.attn2.add_v_proj.weight)" in _error(folder.parent)


# ---------------------------------------------------------------------------------------------------------------
# Broken VAE checkpoints
# ---------------------------------------------------------------------------------------------------------------


def test_vae_problems_are_named_in_wan_names(wan):
    file = wan / "Wan2.1_VAE.pth"
    state = torch.load(str(file), weights_only=True)
    state.pop("decoder.upsamples.4.shortcut.weight")
    state["encoder.middle.1.proj.weight"] = torch.zeros(1)
    torch.save(state, str(file))
    message = _error(wan, load_wan_vae)
    assert "1 missing (decoder.upsamples.4.shortcut.weight)" in message
    assert "encoder.middle.1.proj.weight: expected [32, 32, 1, 1], got [1]" in message


def test_truncated_vae_names_the_file(wan):
    file = wan / "Wan2.1_VAE.pth"
    file.write_bytes(file.read_bytes()[:1000])
    message = _error(wan, load_wan_vae)
    assert str(file) in message and "re-download" in message
