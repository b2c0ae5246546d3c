"""resolve_weights: a weights folder, explicit paths, incomplete folders and Hub names without network."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from fantasytalking.errors import WeightsError
from fantasytalking.loading import resolve_weights
from fantasytalking.testing import make_tiny_weights

WAN = "Wan2.1-I2V-14B-720P"


@pytest.fixture
def weights(tmp_path) -> Path:
    return make_tiny_weights(tmp_path / "weights", "original")


def _error(*args, **kwargs) -> str:
    with pytest.raises(WeightsError) as info:
        resolve_weights(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_one_folder_original(weights):
    paths = resolve_weights(weights)
    assert paths.wan == weights / WAN and paths.wan_layout == "original"
    assert paths.wav2vec == weights / "wav2vec2-base-960h"
    assert paths.fantasytalking == weights / "fantasytalking_model.ckpt"
    names = {p.name for p in paths.files}
    assert {"Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "diffusion_pytorch_model-00002-of-00002.safetensors",
            "tokenizer.json", "model.safetensors", "preprocessor_config.json", "fantasytalking_model.ckpt"} <= names  # fmt: skip
    assert all(p.is_file() for p in paths.files)


def test_one_folder_diffusers(tmp_path):
    root = make_tiny_weights(tmp_path, "diffusers")
    paths = resolve_weights(root)
    assert paths.wan == root / f"{WAN}-Diffusers" and paths.wan_layout == "diffusers"
    assert {"model_index.json", "preprocessor_config.json"} <= {p.name for p in paths.files}


def test_names_are_case_insensitive_and_any_folder_name_works(weights):
    (weights / WAN).rename(weights / "my-wan")
    (weights / "wav2vec2-base-960h").rename(weights / "speech")
    (weights / "fantasytalking_model.ckpt").rename(weights / "FantasyTalking_Model.CKPT")
    paths = resolve_weights(weights)
    assert paths.wan == weights / "my-wan" and paths.wav2vec == weights / "speech"
    assert paths.fantasytalking == weights / "FantasyTalking_Model.CKPT"
    (weights / "my-wan").rename(weights / WAN.lower())
    assert resolve_weights(weights).wan == weights / WAN.lower()


def test_explicit_paths_override_and_stand_alone(weights, tmp_path):
    other = make_tiny_weights(tmp_path / "other", "diffusers")
    paths = resolve_weights(weights, wan=other / f"{WAN}-Diffusers")
    assert paths.wan_layout == "diffusers" and paths.wav2vec == weights / "wav2vec2-base-960h"
    paths = resolve_weights(wan=weights / WAN, wav2vec=other / "wav2vec2-base-960h", fantasytalking=other)
    assert paths.wan_layout == "original" and paths.fantasytalking == other / "fantasytalking_model.ckpt"


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        (f"{WAN}/Wan2.1_VAE.pth", "Wan2.1_VAE.pth"),
        (f"{WAN}/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", "models_clip_open-clip"),
        (f"{WAN}/google", "google/umt5-xxl"),
        (f"{WAN}/diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00001-of-00002"),
        ("wav2vec2-base-960h/preprocessor_config.json", "preprocessor_config.json"),
        ("fantasytalking_model.ckpt", "fantasytalking_model.ckpt"),
    ],
)
def test_a_missing_file_is_named_with_its_folder(weights, remove, named):
    target = weights / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    message = _error(weights)
    assert named in message and str(target.parent) in message


def test_missing_folders(tmp_path, weights):
    assert str(tmp_path / "nope") in _error(tmp_path / "nope")
    shutil.rmtree(weights / "wav2vec2-base-960h")
    message = _error(weights)
    assert "wav2vec2-base-960h" in message and "facebook/wav2vec2-base-960h" in message
    assert str(tmp_path / "x") in _error(wan=tmp_path / "x", wav2vec=tmp_path, fantasytalking=tmp_path)


@pytest.mark.parametrize("local_files_only", [True, False])
def test_hub_names_offline_say_what_to_fetch(weights, tmp_path, monkeypatch, local_files_only):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    local = {"wav2vec": weights / "wav2vec2-base-960h", "fantasytalking": weights / "fantasytalking_model.ckpt"}

    message = _error(wan="Wan-AI/Wan2.1-I2V-14B-720P", local_files_only=local_files_only, **local)
    assert "Wan-AI/Wan2.1-I2V-14B-720P" in message and "hf download" in message
    assert "Wan2.1_VAE.pth" in message and "models_t5_umt5-xxl-enc-bf16.pth" in message
    assert f"WEIGHTS/{WAN}" in message

    message = _error(wan=weights / WAN, wav2vec="facebook/wav2vec2-base-960h", fantasytalking=local["fantasytalking"])
    assert "facebook/wav2vec2-base-960h" in message and "preprocessor_config.json" in message

    message = _error(wan=weights / WAN, wav2vec=local["wav2vec"], fantasytalking="acvlab/FantasyTalking")
    assert "acvlab/FantasyTalking" in message and "fantasytalking_model.ckpt" in message

    assert "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers" in _error(wan="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", **local)
    assert "Wan-AI/Wan2.1-I2V-14B-720P" in _error()  # nothing given: Hub defaults
