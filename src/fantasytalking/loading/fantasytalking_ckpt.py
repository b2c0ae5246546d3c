"""FantasyTalking's audio weights: ``fantasytalking_model.ckpt`` (release pickle) or a flat ``.safetensors``.

Release layout (torch pickle)::

    {"proj_model": {"proj.weight": [P, A], "norm.weight": [P], "norm.bias": [P]},
     "audio_processor": {"blocks.N.cross_attn.processor.k_proj.weight": [D, P],
                         "blocks.N.cross_attn.processor.v_proj.weight": [D, P], ...}}

with A = 768 (wav2vec2 width), P = 2048, D = 5120 and N over all 40 DiT blocks (840,437,760 parameters).
The flat safetensors variant prefixes keys with ``proj_model.`` and ``audio_processor.`` (block keys without
the ``audio_processor.`` prefix are accepted too).

:func:`load_fantasytalking_state` returns the canonical flat names: ``proj_model.{proj.weight, norm.weight,
norm.bias}`` and ``blocks.{i}.cross_attn.processor.{k,v}_proj.weight``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fantasytalking.errors import InputError, WeightsError

from .files import load_safetensors, load_torch_file
from .keys import check_state_dict, format_names, natural_key

__all__ = [
    "PROJ_KEYS",
    "check_fantasytalking_compatible",
    "fantasytalking_expected_shapes",
    "load_fantasytalking_state",
    "save_fantasytalking_state",
]

PROJ_KEYS = ("proj_model.proj.weight", "proj_model.norm.weight", "proj_model.norm.bias")
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.cross_attn\.processor\.([kv])_proj\.weight")
_HINT = "Re-download fantasytalking_model.ckpt from acvlab/FantasyTalking."


def fantasytalking_expected_shapes(num_layers: int, audio_dim: int, proj_dim: int, model_dim: int) -> dict:
    """Canonical key -> shape for a DiT of ``num_layers`` blocks of width ``model_dim``."""
    shapes: dict[str, tuple[int, ...]] = {
        "proj_model.proj.weight": (proj_dim, audio_dim),  # Linear(A -> P, bias=False)
        "proj_model.norm.weight": (proj_dim,),  # LayerNorm(P)
        "proj_model.norm.bias": (proj_dim,),
    }
    for i in range(num_layers):
        for kv in ("k", "v"):
            shapes[f"blocks.{i}.cross_attn.processor.{kv}_proj.weight"] = (model_dim, proj_dim)  # Linear(P -> D)
    return shapes


def _flatten(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Release pickle or flat dict -> canonical names (unknown keys kept as they are, to be reported)."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} does not hold a dict of weights: it is not a FantasyTalking checkpoint. {_HINT}")
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("proj_model", "audio_processor") and isinstance(value, Mapping):
            prefix = "proj_model." if key == "proj_model" else ""
            for sub, tensor in value.items():
                flat[prefix + str(sub)] = tensor
        else:
            flat[str(key)] = value
    out: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        name = key.removeprefix("audio_processor.")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path}: entry {key} is not a tensor: the file is not a FantasyTalking checkpoint. {_HINT}"
            )
        out[name] = value
    return out


def load_fantasytalking_state(path: str | Path, *, num_layers: int | None = None) -> dict[str, torch.Tensor]:
    """Read and validate FantasyTalking's audio weights; returns the canonical flat state dict.

    The pickle is read with ``weights_only=True`` (memory-mapped where possible). Every projector tensor and
    both k/v tensors of every block ``0..num_layers-1`` must be present with consistent shapes (``num_layers``
    defaults to the number of blocks found, which must then be contiguous from 0), nothing else may be.
    The tensors may be memory-mapped from the file: copy them (e.g. into a model) before overwriting the file
    in place (:func:`save_fantasytalking_state` replaces files atomically, so it is safe).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state = _flatten(load_safetensors(path), path)
    else:
        state = _flatten(load_torch_file(path), path)

    indices = sorted({int(m[1]) for k in state if (m := _BLOCK_RE.fullmatch(k))})
    if num_layers is None:
        num_layers = indices[-1] + 1 if indices else 0
    if num_layers == 0:
        raise WeightsError(f"{path} holds no blocks.N.cross_attn.processor.k_proj/v_proj weights. {_HINT}")

    # Sizes come from the projector and block 0 when present (else the first tensor found), so that one
    # mis-shaped tensor is reported against the others rather than the other way round.
    proj = state.get("proj_model.proj.weight")
    audio_dim = proj.shape[1] if proj is not None and proj.dim() == 2 else 0
    proj_dim = proj.shape[0] if proj is not None and proj.dim() == 2 else 0
    ref = state.get("blocks.0.cross_attn.processor.k_proj.weight")
    if ref is None:
        ref = next((state[k] for k in sorted(state, key=natural_key) if _BLOCK_RE.fullmatch(k)), None)
    model_dim = ref.shape[0] if ref is not None and ref.dim() == 2 else 0
    if not proj_dim and ref is not None and ref.dim() == 2:
        proj_dim = ref.shape[1]

    expected = fantasytalking_expected_shapes(num_layers, audio_dim, proj_dim, model_dim)
    check_state_dict(expected, state, what=f"FantasyTalking audio weights in {path}", hint=_HINT)
    return state


def check_fantasytalking_compatible(state: Mapping[str, torch.Tensor], *, num_layers: int, model_dim: int,
                                    audio_dim: int | None = None, source: str = "FantasyTalking weights") -> None:  # fmt: skip
    """Raise :class:`WeightsError` unless the audio weights fit a DiT of ``num_layers`` x ``model_dim`` (and,
    if given, an audio encoder of width ``audio_dim``): e.g. the release on a Wan 1.3B checkpoint."""
    layers = len({int(m[1]) for k in state if (m := _BLOCK_RE.fullmatch(k))})
    dim = state["blocks.0.cross_attn.processor.k_proj.weight"].shape[0]
    in_dim = state["proj_model.proj.weight"].shape[1]
    if layers != num_layers or dim != model_dim:
        raise WeightsError(
            f"{source} are for a DiT with {layers} blocks of width {dim}, but the Wan checkpoint has {num_layers} "
            f"blocks of width {model_dim}: use Wan2.1-I2V-14B-720P (40 blocks of 5120) with the released weights."
        )
    if audio_dim is not None and in_dim != audio_dim:
        raise WeightsError(
            f"{source} expect {in_dim}-d audio features, but the wav2vec2 model gives {audio_dim}-d: "
            "use facebook/wav2vec2-base-960h (768-d) with the released weights."
        )


def save_fantasytalking_state(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write canonical audio weights as the release pickle (``.ckpt``/``.pt``/``.pth``) or flat ``.safetensors``."""
    path = Path(path)
    bad = sorted((k for k in state if k not in PROJ_KEYS and not _BLOCK_RE.fullmatch(k)), key=natural_key)
    if bad:
        raise InputError(
            f"cannot save FantasyTalking weights: unknown key(s) {format_names(bad)}; use canonical names."
        )
    proj = {k.removeprefix("proj_model."): v.contiguous() for k, v in state.items() if k in PROJ_KEYS}
    blocks = {k: state[k].contiguous() for k in sorted(state, key=natural_key) if _BLOCK_RE.fullmatch(k)}
    if path.suffix not in (".safetensors", ".ckpt", ".pt", ".pth"):
        raise InputError(f"cannot save FantasyTalking weights to {path}: use a .ckpt or .safetensors file name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: the tensors may be memory-mapped from the file being replaced
    # (load, edit, save to the same path), and truncating a mapped file in place kills the process (SIGBUS).
    # (Same file name in a scratch folder: torch.save names the archive's inner folder after the file.)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save-") as scratch:
        tmp = Path(scratch) / path.name
        if path.suffix == ".safetensors":
            flat = {f"proj_model.{k}": v for k, v in proj.items()}
            flat |= {f"audio_processor.{k}": v for k, v in blocks.items()}
            save_file(flat, str(tmp), metadata={"format": "pt"})
        else:
            torch.save({"proj_model": proj, "audio_processor": blocks}, str(tmp))
        os.replace(tmp, path)
    return path
