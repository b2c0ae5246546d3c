"""FantasyTalking audio weights: both file formats, canonical names, and every defect named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.loading import (
    check_fantasytalking_compatible,
    load_fantasytalking_state,
    save_fantasytalking_state,
)
from fantasytalking.testing import make_tiny_weights

CANONICAL = {
    "proj_model.proj.weight": (16, 32),
    "proj_model.norm.weight": (16,),
    "proj_model.norm.bias": (16,),
    "blocks.0.cross_attn.processor.k_proj.weight": (24, 16),
    "blocks.0.cross_attn.processor.v_proj.weight": (24, 16),
    "blocks.1.cross_attn.processor.k_proj.weight": (24, 16),
    "blocks.1.cross_attn.processor.v_proj.weight": (24, 16),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("tiny"), "original") / "fantasytalking_model.ckpt"


@pytest.fixture(scope="module")
def state(ckpt) -> dict[str, torch.Tensor]:
    return load_fantasytalking_state(ckpt)


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(WeightsError) as info:
        load_fantasytalking_state(path, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_release_pickle_layout_and_canonical_names(ckpt, state):
    raw = torch.load(str(ckpt), weights_only=True)
    assert set(raw) == {"proj_model", "audio_processor"}
    assert set(raw["proj_model"]) == {"proj.weight", "norm.weight", "norm.bias"}
    assert "blocks.1.cross_attn.processor.v_proj.weight" in raw["audio_processor"]
    assert {k: tuple(v.shape) for k, v in state.items()} == CANONICAL
    assert all(v.abs().sum() > 0 for v in state.values())  # non-zero: audio has an effect
    assert load_fantasytalking_state(ckpt, num_layers=2).keys() == state.keys()


@pytest.mark.parametrize("name", ["w.safetensors", "w.ckpt"])
def test_save_load_round_trip(tmp_path, state, name):
    path = save_fantasytalking_state(state, tmp_path / name)
    again = load_fantasytalking_state(path)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)


def test_flat_safetensors_with_and_without_audio_processor_prefix(tmp_path, state):
    save_fantasytalking_state(state, tmp_path / "a.safetensors")
    from safetensors.torch import load_file

    flat = load_file(str(tmp_path / "a.safetensors"))
    assert "audio_processor.blocks.0.cross_attn.processor.k_proj.weight" in flat and "proj_model.norm.bias" in flat
    bare = {k.removeprefix("audio_processor."): v for k, v in flat.items()}
    save_file(bare, str(tmp_path / "b.safetensors"))
    assert load_fantasytalking_state(tmp_path / "b.safetensors").keys() == state.keys()


def _pickle(tmp_path: Path, state: dict, edit) -> Path:
    proj = {k.removeprefix("proj_model."): v for k, v in state.items() if k.startswith("proj_model.")}
    blocks = {k: v for k, v in state.items() if k.startswith("blocks.")}
    edit(proj, blocks)
    path = tmp_path / "fantasytalking_model.ckpt"
    torch.save({"proj_model": proj, "audio_processor": blocks}, str(path))
    return path


def test_renamed_missing_reshaped_are_named(tmp_path, state):
    def edit(proj, blocks):
        blocks["blocks.1.cross_attn.processor.k_proj_x.weight"] = blocks.pop(
            "blocks.1.cross_attn.processor.k_proj.weight"
        )
        proj.pop("norm.bias")
        blocks["blocks.0.cross_attn.processor.v_proj.weight"] = torch.zeros(24, 8)

    message = _error(_pickle(tmp_path, state, edit))
    assert "2 missing (blocks.1.cross_attn.processor.k_proj.weight, proj_model.norm.bias)" in message
    assert "1 unexpected (blocks.1.cross_attn.processor.k_proj_x.weight)" in message
    assert "blocks.0.cross_attn.processor.v_proj.weight: expected [24, 16], got [24, 8]" in message
    assert "fantasytalking_model.ckpt" in message


def test_wrong_layer_count_is_named(ckpt):
    message = _error(ckpt, num_layers=40)
    assert "76 missing" in message and "blocks.2.cross_attn.processor.k_proj.weight" in message


def test_truncated_or_foreign_file_is_named(tmp_path, ckpt):
    broken = tmp_path / "fantasytalking_model.ckpt"
    broken.write_bytes(ckpt.read_bytes()[:-100])
    assert str(broken) in _error(broken) and "re-download" in _error(broken)
    broken.write_bytes(b"not a checkpoint")
    assert str(broken) in _error(broken)
    torch.save({"proj_model": {"proj.weight": torch.zeros(2, 2)}, "audio_processor": {}, "step": 3}, str(broken))
    assert "entry step is not a tensor" in _error(broken)
    torch.save({"proj_model": {"proj.weight": torch.zeros(2, 2)}, "audio_processor": {}}, str(broken))
    assert "holds no blocks.N.cross_attn.processor" in _error(broken)


def test_save_refuses_bad_names_and_suffixes(tmp_path, state):
    with pytest.raises(InputError):
        save_fantasytalking_state({"foo": torch.zeros(1)}, tmp_path / "x.ckpt")
    with pytest.raises(InputError):
        save_fantasytalking_state(state, tmp_path / "x.bin")


def test_compatibility_with_the_dit(state):
    check_fantasytalking_compatible(state, num_layers=2, model_dim=24, audio_dim=32)
    with pytest.raises(WeightsError, match=r"2 blocks of width 24.*40 blocks of width 5120"):
        check_fantasytalking_compatible(state, num_layers=40, model_dim=5120)
    with pytest.raises(WeightsError, match="768"):
        check_fantasytalking_compatible(state, num_layers=2, model_dim=24, audio_dim=768)
