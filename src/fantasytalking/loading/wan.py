"""Wan2.1 DiT and VAE loaders, for both the original release layout and the diffusers layout.

Original layout (``Wan-AI/Wan2.1-I2V-14B-720P``)::

    config.json                                         Wan's own config: dim, ffn_dim, num_heads, model_type ...
    diffusion_pytorch_model-0000K-of-0000N.safetensors  DiT shards, Wan key names (+ optional .index.json)
    Wan2.1_VAE.pth                                      VAE state dict (torch pickle, no config)
    models_t5_umt5-xxl-enc-bf16.pth                     see text_encoder.py
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   see image_encoder.py
    google/umt5-xxl/                                    tokenizer

Diffusers layout (``Wan-AI/Wan2.1-I2V-14B-720P-Diffusers``): ``model_index.json`` plus one folder per component
(``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``image_encoder/``, ``image_processor/``).

Both DiT paths build the model on ``meta`` and fill it one shard at a time after checking, from the safetensors
headers alone, that the files hold exactly the tensors the model needs (diffusers 0.42's own ``from_pretrained``
only warns about missing keys and leaves them on ``meta``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)

from fantasytalking.errors import WeightsError

from .files import (
    as_state_dict,
    find_shards,
    iter_safetensors_shards,
    load_torch_file,
    read_json,
    read_shard_shapes,
    read_sidecar_config,
)
from .keys import assign_state_dict, check_no_meta, check_state_dict, expected_shapes
from .mappings import (
    diffusers_dit_key_to_wan,
    diffusers_vae_key_to_wan,
    wan_dit_key_to_diffusers,
    wan_vae_key_to_diffusers,
)

__all__ = [
    "WAN_CLIP_FILE",
    "WAN_T5_FILE",
    "WAN_TOKENIZER_DIR",
    "WAN_VAE_FILE",
    "WanLayout",
    "detect_wan_layout",
    "infer_wan_vae_config",
    "load_wan_transformer",
    "load_wan_vae",
    "wan_config_to_diffusers",
]

WanLayout = Literal["original", "diffusers"]

WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
WAN_TOKENIZER_DIR = "google/umt5-xxl"

_I2V_HINT = "FantasyTalking needs the image-to-video model Wan-AI/Wan2.1-I2V-14B-720P (or its -Diffusers copy)"


def detect_wan_layout(path: str | Path) -> WanLayout:
    """``"diffusers"`` for a folder with ``model_index.json`` / ``transformer/``; ``"original"`` for Wan's layout."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"Wan2.1 weights folder {path} does not exist: download Wan-AI/Wan2.1-I2V-14B-720P into it.")
    if path.is_file():
        return "original"
    if (path / "model_index.json").is_file() or (path / "transformer" / "config.json").is_file():
        return "diffusers"
    config = path / "config.json"
    if config.is_file() and read_json(config).get("_class_name") in ("WanTransformer3DModel", "AutoencoderKLWan"):
        return "diffusers"  # a component subfolder passed directly
    return "original"


# ----------------------------------------------------------------------------------------------------------------
# DiT
# ----------------------------------------------------------------------------------------------------------------


def wan_config_to_diffusers(
    wan_config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], *, source: Path | str = "the Wan folder"
) -> dict:
    """``WanTransformer3DModel`` config from Wan's ``config.json`` plus tensor shapes of the checkpoint.

    ``text_dim`` comes from ``text_embedding.0.weight`` [D, text_dim] and ``image_dim`` from
    ``img_emb.proj.0.weight`` [image_dim] (LayerNorm over the CLIP features); the image keys/values project
    the already-embedded image tokens, so ``added_kv_proj_dim`` is the model width D.
    """
    model_type = wan_config.get("model_type", "i2v")
    if model_type != "i2v" or "img_emb.proj.0.weight" not in shapes:
        kind = f"model_type {model_type!r}" if model_type != "i2v" else "no image-conditioning weights (img_emb.*)"
        raise WeightsError(f"the Wan checkpoint in {source} is not an image-to-video model ({kind}): {_I2V_HINT}.")
    for field in ("dim", "ffn_dim", "freq_dim", "in_dim", "num_heads", "num_layers", "out_dim"):
        if not isinstance(wan_config.get(field), int):
            raise WeightsError(
                f"{Path(source) / 'config.json'} has no integer {field!r}: the file is corrupt; re-download it."
            )
    dim, heads = wan_config["dim"], wan_config["num_heads"]
    if dim % heads:
        raise WeightsError(
            f"{Path(source) / 'config.json'}: dim {dim} is not divisible by num_heads {heads}; re-download it."
        )
    text_shape = shapes.get("text_embedding.0.weight")  # [D, text_dim]
    qk_norm = wan_config.get("qk_norm", True)
    return {
        "patch_size": tuple(wan_config.get("patch_size", (1, 2, 2))),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": wan_config["in_dim"],
        "out_channels": wan_config["out_dim"],
        "text_dim": text_shape[1] if text_shape and len(text_shape) == 2 else wan_config.get("text_dim", 4096),
        "freq_dim": wan_config["freq_dim"],
        "ffn_dim": wan_config["ffn_dim"],
        "num_layers": wan_config["num_layers"],
        "cross_attn_norm": bool(wan_config.get("cross_attn_norm", True)),
        "qk_norm": "rms_norm_across_heads" if qk_norm else None,
        "eps": wan_config.get("eps", 1e-6),
        "image_dim": shapes["img_emb.proj.0.weight"][0],
        "added_kv_proj_dim": dim,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }


def _diffusers_component_dir(path: Path, sub: str) -> Path:
    return path / sub if (path / sub / "config.json").is_file() else path


def load_wan_transformer(
    path: str | Path, *, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> WanTransformer3DModel:
    """Load the Wan2.1 I2V DiT from an original-layout or diffusers-layout folder.

    Every tensor the model needs must come from the files, and every tensor in the files must be used: anything
    else is a :class:`WeightsError` naming the keys (original Wan names for the original layout). Parameters
    diffusers keeps in float32 (``_keep_in_fp32_modules``: norms, time embedder, modulation tables) stay float32.
    """
    path = Path(path)
    if detect_wan_layout(path) == "diffusers":
        folder = _diffusers_component_dir(path, "transformer")
        config = read_json(folder / "config.json")
        if config.get("image_dim") is None:
            raise WeightsError(f"the Wan DiT in {folder} is not an image-to-video model (no image_dim): {_I2V_HINT}.")
        return _load_diffusers_model(WanTransformer3DModel, folder, dtype=dtype, device=device, what="Wan2.1 DiT")
    return _load_original_dit(path, dtype=dtype, device=device)


def _load_original_dit(folder: Path, *, dtype: torch.dtype, device: str | torch.device) -> WanTransformer3DModel:
    if folder.is_file():
        folder = folder.parent
    wan_config = read_json(folder / "config.json")
    files = find_shards(folder, "diffusion_pytorch_model")
    shapes, _ = read_shard_shapes(files)  # headers only: nothing is read yet
    config = wan_config_to_diffusers(wan_config, shapes, source=folder)

    with init_empty_weights():
        model = WanTransformer3DModel.from_config(config)
    expected = expected_shapes(model)

    # Names: original -> diffusers via diffusers' converter (a per-key rename); messages show original names.
    to_diffusers = {k: wan_dit_key_to_diffusers(k) for k in shapes}
    from_file: dict[str, str] = {}
    for original, new in to_diffusers.items():
        if new in from_file:  # e.g. the same tensor with and without a "model.diffusion_model." prefix
            raise WeightsError(
                f"Wan2.1 DiT weights in {folder} hold {from_file[new]} and {original}, which are the same tensor: "
                "the folder mixes two checkpoints; re-download it."
            )
        from_file[new] = original

    def rename(key: str) -> str:
        return from_file.get(key) or diffusers_dit_key_to_wan(key)

    what = f"Wan2.1 DiT weights in {folder}"
    hint = (
        f"The shards do not fit {folder / 'config.json'} (dim {wan_config['dim']}, {wan_config['num_layers']} layers): "
        f"re-download the folder; {_I2V_HINT}."
    )
    check_state_dict(expected, {to_diffusers[k]: s for k, s in shapes.items()}, what=what, hint=hint, rename=rename)

    keep = model._keep_in_fp32_modules or []
    for _, shard in iter_safetensors_shards(files):
        converted = convert_wan_transformer_to_diffusers(shard)  # pops from `shard`: one copy at a time
        assign_state_dict(
            model, converted, what=what, hint=hint, dtype=dtype, device=device, keep_in_fp32=keep,
            rename=rename, expected=expected,
        )  # fmt: skip
        del shard, converted
    check_no_meta(model, what=what, hint=hint, rename=rename)
    return model.to(device).eval()


def _load_diffusers_model(cls, folder: Path, *, dtype: torch.dtype, device: str | torch.device, what: str):
    """Build ``cls`` from ``folder/config.json`` on meta, check the safetensors headers, then fill shard by shard."""
    config = read_json(folder / "config.json")
    if config.get("_class_name") not in (None, cls.__name__):
        raise WeightsError(
            f"{folder / 'config.json'} describes a {config['_class_name']}, not a {cls.__name__}: "
            "point to the Wan2.1-I2V-14B-720P-Diffusers folder."
        )
    files = find_shards(folder, "diffusion_pytorch_model")
    shapes, _ = read_shard_shapes(files)
    with init_empty_weights():
        model = cls.from_config(config)
    expected = expected_shapes(model)
    what = f"{what} weights in {folder}"
    hint = f"The files do not fit {folder / 'config.json'}: re-download the folder."
    check_state_dict(expected, shapes, what=what, hint=hint)
    keep = model._keep_in_fp32_modules or []
    for _, shard in iter_safetensors_shards(files):
        assign_state_dict(model, shard, what=what, hint=hint, dtype=dtype, device=device, keep_in_fp32=keep,
                          expected=expected)  # fmt: skip
        del shard
    check_no_meta(model, what=what, hint=hint)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# VAE
# ----------------------------------------------------------------------------------------------------------------


def infer_wan_vae_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``AutoencoderKLWan`` config from the original VAE's tensor shapes (Wan2.1 defaults where not inferable).

    ``base_dim`` from ``encoder.conv1.weight`` [base, 3, 3, 3, 3], ``z_dim`` from ``conv2.weight`` [z, z, 1, 1, 1],
    the stage layout from where ``encoder.downsamples.N.resample`` sits (every ``num_res_blocks + 1``),
    ``dim_mult`` from each stage's first residual conv and ``temperal_downsample`` from ``time_conv`` presence.
    """
    config: dict[str, Any] = {}
    if (w := state.get("encoder.conv1.weight")) is not None:
        config["base_dim"] = w.shape[0]
    if (w := state.get("conv2.weight")) is not None:
        config["z_dim"] = w.shape[0]
    resamples = sorted({int(m[1]) for k in state if (m := re.match(r"encoder\.downsamples\.(\d+)\.resample\.", k))})
    if resamples and "base_dim" in config:
        per_stage = resamples[0] + 1  # num_res_blocks residual blocks, then the resample
        firsts = [f"encoder.downsamples.{s * per_stage}.residual.2.weight" for s in range(len(resamples) + 1)]
        if all(k in state for k in firsts) and all(r == (i + 1) * per_stage - 1 for i, r in enumerate(resamples)):
            config["num_res_blocks"] = per_stage - 1
            config["dim_mult"] = [state[k].shape[0] // config["base_dim"] for k in firsts]
            config["temperal_downsample"] = [f"encoder.downsamples.{r}.time_conv.weight" in state for r in resamples]
    return config


def load_wan_vae(path: str | Path, *, dtype: torch.dtype, device: str | torch.device = "cpu") -> AutoencoderKLWan:
    """Load the Wan2.1 VAE from ``Wan2.1_VAE.pth`` (original; a folder holding it or the file) or ``vae/``.

    The original file carries no config: it is inferred from tensor shapes (:func:`infer_wan_vae_config`),
    defaulting to the Wan2.1 VAE; a sidecar ``Wan2.1_VAE.pth.config.json`` may override any field.
    """
    path = Path(path)
    if detect_wan_layout(path) == "diffusers":
        folder = _diffusers_component_dir(path, "vae")
        return _load_diffusers_model(AutoencoderKLWan, folder, dtype=dtype, device=device, what="Wan2.1 VAE")

    file = path if path.is_file() else path / WAN_VAE_FILE
    state = as_state_dict(load_torch_file(file), file)
    config = {**infer_wan_vae_config(state), **read_sidecar_config(file)}
    num_res_blocks = config.get("num_res_blocks", 2)

    converted = convert_wan_vae_to_diffusers(state)  # new dict over the same tensors
    from_file = {wan_vae_key_to_diffusers(k): k for k in state}

    def rename(key: str) -> str:
        return from_file.get(key) or diffusers_vae_key_to_wan(key, num_res_blocks=num_res_blocks)

    with init_empty_weights():
        model = AutoencoderKLWan.from_config(config)
    what = f"Wan2.1 VAE weights in {file}"
    hint = f"Re-download {file.name} from Wan-AI/Wan2.1-I2V-14B-720P."
    check_state_dict(expected_shapes(model), converted, what=what, hint=hint, rename=rename)
    keep = model._keep_in_fp32_modules or []
    assign_state_dict(
        model, converted, what=what, hint=hint, dtype=dtype, device=device, keep_in_fp32=keep, rename=rename
    )
    del state, converted
    check_no_meta(model, what=what, hint=hint, rename=rename)
    return model.to(device).eval()
