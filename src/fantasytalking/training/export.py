"""Trained conditioning weights as one safetensors file, and its strict loader for the pipeline.

File layout (tensor names):

* ``proj_model.{proj.weight, norm.weight, norm.bias}``: the audio projector (release names);
* ``blocks.N.cross_attn.processor.{k,v}_proj.weight``: the audio branch of every block (release names),
  so the audio part reads like ``fantasytalking_model.safetensors``;
* ``blocks.N.cross_attn.processor.branches.<name>.{k,v}_proj.weight``: other token branches (``face``);
* ``<name>.<tensor>``: the other conditioners' weights (``face.queries``, ``motion.raw_low``, ...);
* ``lora.<module>.lora_{A,B}.weight``: LoRA adapters of the backbone (diffusers module names), if trained;
* ``backbone.<key>``: the whole backbone (diffusers names), only after full fine-tuning.

The safetensors metadata holds ``format`` (``fantasytalking-conditioning``), ``format_version``
and ``config``: a JSON object with the sizes needed to rebuild every conditioner, the LoRA
settings and the run's resolved training configuration.

:func:`load_into_pipeline` adds what the file needs to a
:class:`~fantasytalking.pipeline.FantasyTalkingPipeline` (face / motion conditioners and branches,
LoRA adapters) and loads every tensor; a missing, unexpected or mis-shaped tensor is a
:class:`~fantasytalking.errors.WeightsError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.loading import check_state_dict
from fantasytalking.loading.files import save_safetensors
from fantasytalking.training.builder import attach_face, attach_motion
from fantasytalking.training.lora import has_lora, inject_lora, lora_module_key, lora_state_dict

if TYPE_CHECKING:
    from fantasytalking.pipeline import FantasyTalkingPipeline
    from fantasytalking.training.ema import EMACallback
    from fantasytalking.training.module import FantasyTalkingModule

EXPORT_FORMAT = "fantasytalking-conditioning"
EXPORT_FORMAT_VERSION = 1

_AUDIO_PROJ = "conditioning.conditioners.audio.proj_model."
_AUDIO_POSITION = "conditioning.conditioners.audio.window_position"
_AUDIO_POSITION_EXPORT = "audio.window_position"  # not in the release: the demo's offset-in-window embedding
_AUDIO_BRANCH = re.compile(r"^transformer\.transformer\.blocks\.(\d+)\.attn2\.processor\.([kv]_proj\.weight)$")
_OTHER_BRANCH = re.compile(
    r"^transformer\.transformer\.blocks\.(\d+)\.attn2\.processor\.branches\.(\w+)\.([kv]_proj\.weight)$"
)
_CONDITIONER = re.compile(r"^conditioning\.conditioners\.(\w+)\.(.+)$")
_BACKBONE = "transformer.transformer."


def _branch_key(index: int | str, name: str, kv: str) -> str:
    return f"blocks.{index}.cross_attn.processor.branches.{name}.{kv}"


def conditioning_tensors(state: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Export names -> tensors, from a training module's state dict (LightningModule names)."""
    out: dict[str, torch.Tensor] = {}
    backbone: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        if key.startswith(_AUDIO_PROJ):
            out["proj_model." + key[len(_AUDIO_PROJ):]] = tensor
        elif key == _AUDIO_POSITION:
            out[_AUDIO_POSITION_EXPORT] = tensor
        elif match := _AUDIO_BRANCH.match(key):
            out[f"blocks.{match[1]}.cross_attn.processor.{match[2]}"] = tensor
        elif match := _OTHER_BRANCH.match(key):
            out[_branch_key(match[1], match[2], match[3])] = tensor
        elif (match := _CONDITIONER.match(key)) and match[1] != "audio":
            if not match[2].startswith("encoder."):  # frozen face encoders come from their own files
                out[f"{match[1]}.{match[2]}"] = tensor
        elif key.startswith(_BACKBONE):
            backbone[key[len(_BACKBONE):]] = tensor
    if info.get("lora"):
        out.update({f"lora.{k}": v for k, v in lora_state_dict(backbone).items()})
    if info.get("backbone", {}).get("full"):
        out.update({f"backbone.{k}": v for k, v in backbone.items() if ".lora_" not in k})
    return out


def _write(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any], training: Any, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"export to a .safetensors file, not {path.name}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {**info, "training": training}
    metadata = {"format": EXPORT_FORMAT, "format_version": str(EXPORT_FORMAT_VERSION),
                "config": json.dumps(config, sort_keys=True, default=str)}  # fmt: skip
    return save_safetensors(tensors, path, metadata)  # atomic and reproducible: one content, one sha256


def export_conditioning(module: FantasyTalkingModule, path: str | Path, *, ema: EMACallback | None = None) -> Path:
    """Write ``module``'s trained conditioning (its EMA average with ``ema``) to ``path`` (.safetensors)."""
    state = dict(module.state_dict())
    if ema is not None:
        shadow = ema.ema_state_dict()
        if not shadow:
            raise InputError("the EMA callback holds no average yet; train first or export without ema.")
        state.update(shadow)
    return _write(conditioning_tensors(state, module.export_info()), module.export_info(), module.resolved_config(),
                  path)  # fmt: skip


def export_checkpoint(checkpoint: str | Path, path: str | Path, *, use_ema: bool = False,
                      motion_stats: Mapping[str, Any] | None = None) -> Path:
    """Write the conditioning of a training checkpoint (``.ckpt``) to ``path``, without building the model; with
    ``motion_stats`` (the training shards' ``stats.json``) its motion request scale is fitted before the one write
    (see :func:`with_motion_request_scale`)."""
    from fantasytalking.training.module import ema_weights, read_training_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(f"checkpoint {checkpoint} does not exist; give a .ckpt written by examples/finetune.py.")
    ckpt = read_training_checkpoint(checkpoint)
    info = ckpt["fantasytalking"]
    state = dict(ckpt["state_dict"])
    if use_ema:
        state.update(ema_weights(ckpt, checkpoint))
    tensors, export = conditioning_tensors(state, info["export"]), info["export"]
    if motion_stats is not None:
        export = _with_request_scale(tensors, export, motion_stats, where=str(checkpoint))
    return _write(tensors, export, info["config"], path)


def with_motion_request_scale(path: str | Path, stats: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """Write ``path`` to ``out`` with its motion conditioner's request scale fitted to ``stats`` (a ``stats.json``
    with ``quantiles``, of the data the model was trained on); every tensor unchanged. Returns the new
    ``request_scale`` entry. See :class:`~fantasytalking.conditioning.MotionConditioner` (request scale)."""
    tensors, config = read_export(path)
    info = _with_request_scale(tensors, {k: v for k, v in config.items() if k != "training"}, stats, where=str(path))
    _write(tensors, info, config.get("training"), out)
    return info["conditioners"]["motion"]["request_scale"]


def _with_request_scale(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any], stats: Mapping[str, Any],
                        *, where: str) -> dict[str, Any]:
    """``info`` (an export's config, no ``training``) with the motion conditioner's ``request_scale`` fitted to
    ``stats``; refuses stats whose p1/p99 are not the conditioner's saved statistics."""
    from fantasytalking.conditioning.motion import MOTION_NAMES, MotionConditioner, quantile_table

    motion = info.get("conditioners", {}).get("motion")
    if motion is None:
        raise InputError(f"{where} has no motion conditioner; a request scale needs one.")
    quantiles = quantile_table(stats)  # (K + 1, 2)
    if quantiles is None:
        raise InputError("the motion statistics have no face/body quantiles; rewrite stats.json with "
                         "fantasytalking.data.preprocess.write_stats (since 2026-12-06).")  # fmt: skip
    conditioner = MotionConditioner(**{k: v for k, v in motion.items() if k != "request_scale"})
    _load_module(conditioner, {k[len("motion."):]: v for k, v in tensors.items() if k.startswith("motion.")},
                 what=f"{where} (motion conditioner)", hint="re-export it.", prefix="motion.")  # fmt: skip
    low, high = conditioner.raw_low.tolist(), conditioner.raw_high.tolist()
    try:
        stat_low = [float(stats[name]["p1"]) for name in MOTION_NAMES]
        stat_high = [float(stats[name]["p99"]) for name in MOTION_NAMES]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"the motion statistics lack face/body p1/p99 ({err}); rerun preprocessing.") from None
    if not (torch.allclose(torch.tensor(low), torch.tensor(stat_low), rtol=5e-3)
            and torch.allclose(torch.tensor(high), torch.tensor(stat_high), rtol=5e-3)):  # fmt: skip (float16 copies)
        raise InputError(f"{where}'s motion statistics (p1 {low}, p99 {high}) are not those of these stats "
                         f"(p1 {stat_low}, p99 {stat_high}); give the stats.json of the data it was trained on.")
    conditioner.fit_request_scale(quantiles)
    motion = {**motion, "request_scale": conditioner.request_scale.tolist()}
    return {**info, "conditioners": {**info["conditioners"], "motion": motion}}


def read_export(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and config of an exported file; a file of another kind is a :class:`WeightsError`."""
    return _read(path, tensors=True)


def read_export_config(path: str | Path) -> dict[str, Any]:
    """The config of an exported file, without reading its tensors (checked as :func:`read_export` checks it)."""
    return _read(path, tensors=False)[1]


def _read(path: str | Path, *, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"conditioning weights {path} do not exist; export them with export_checkpoint.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}  # noqa: SIM118
    except Exception as err:
        raise WeightsError(f"cannot read {path} as safetensors ({type(err).__name__}); re-export it.") from None
    if metadata.get("format") != EXPORT_FORMAT:
        raise WeightsError(f"{path} is not a FantasyTalking conditioning export (no '{EXPORT_FORMAT}' metadata); "
                           "use export_checkpoint on a training checkpoint.")  # fmt: skip
    if int(metadata.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
        raise WeightsError(f"{path} has export format {metadata['format_version']}; update fantasytalking to read it.")
    return state, json.loads(metadata["config"])


def _take(remaining: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    keys = [k for k in remaining if k.startswith(prefix)]
    return {k[len(prefix):]: remaining.pop(k) for k in keys}


def _load_module(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, what: str, hint: str,
                 prefix: str = "") -> None:  # fmt: skip
    """Copy ``state`` into ``module``: every key, no other, same shapes (names reported with ``prefix``)."""
    own = dict(module.state_dict())
    check_state_dict(own, state, what=what, hint=hint, rename=lambda key: prefix + key)
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def load_into_pipeline(
    pipe: FantasyTalkingPipeline, path: str | Path, *, face_encoder: Any | None = None
) -> dict[str, Any]:
    """Load an exported file into ``pipe``: audio projector and branch, plus face / motion / LoRA / backbone
    as the file says (conditioners and branches the pipeline lacks are added). Returns the file's config.

    Args:
        face_encoder: the face encoder object of an added face conditioner (default: built on first use from the
            ``encoder_spec`` it was trained with, see :class:`~fantasytalking.conditioning.FaceConditioner`).
    """
    tensors, config = read_export(path)
    source = f"the conditioning weights in {path}"
    hint = "export the weights again from a checkpoint of this model."
    transformer = pipe.transformer
    dims = config.get("backbone", {})
    if (dims.get("num_layers"), dims.get("inner_dim")) != (transformer.num_layers, transformer.inner_dim):
        raise WeightsError(
            f"{source} are for a backbone of {dims.get('num_layers')} blocks of width {dims.get('inner_dim')}, the "
            f"pipeline has {transformer.num_layers} of {transformer.inner_dim}; load the Wan weights they were "
            "trained on."
        )
    remaining = dict(tensors)

    # Audio: release names, through the existing strict loaders.
    audio_state = {k: remaining.pop(k) for k in list(remaining)
                   if k.startswith("proj_model.") or re.fullmatch(r"blocks\.\d+\.cross_attn\.processor\.[kv]_proj\.weight", k)}  # fmt: skip
    audio = pipe.audio_conditioner
    audio.load_projector(audio_state, source=source)
    transformer.load_audio_branch(audio_state, source=source)
    audio.mode = config.get("audio", {}).get("mode", "frame")
    position = remaining.pop(_AUDIO_POSITION_EXPORT, None)
    if position is not None:
        if tuple(position.shape[1:]) != (audio.token_dim,):
            raise WeightsError(f"{source}: {_AUDIO_POSITION_EXPORT} has shape {tuple(position.shape)}, the audio tokens "
                               f"are {audio.token_dim}-d; {hint}")  # fmt: skip
        if audio.window_position is None:  # e.g. a pipeline built for the release: add the embedding
            weight = audio.proj_model.proj.weight
            audio.window_position = torch.nn.Parameter(position.to(weight.device, weight.dtype), requires_grad=False)
        elif audio.window_position.shape != position.shape:
            raise WeightsError(f"{source}: {_AUDIO_POSITION_EXPORT} has shape {tuple(position.shape)}, the pipeline's "
                               f"{tuple(audio.window_position.shape)}; {hint}")  # fmt: skip
        else:
            with torch.no_grad():
                audio.window_position.copy_(position)
    elif audio.window_position is not None:
        raise WeightsError(f"{source} have no {_AUDIO_POSITION_EXPORT}, but the pipeline's audio conditioner has a "
                           f"window-position embedding; {hint}")  # fmt: skip

    # Other conditioners and their branches.
    for name, cfg in config.get("conditioners", {}).items():
        if name not in pipe.conditioning:
            if name == "face":
                attach_face(transformer, pipe.conditioning, cfg, encoder=face_encoder)
            elif name == "motion":
                attach_motion(transformer, pipe.conditioning, cfg)
            else:
                raise WeightsError(f"{source} hold a {name!r} conditioner; add one to pipe.conditioning first.")
        conditioner = pipe.conditioning[name]
        _load_module(conditioner, _take(remaining, f"{name}."), what=f"{source} ({name} conditioner)", hint=hint,
                     prefix=f"{name}.")  # fmt: skip
        if name == "motion":  # a config entry, not a weight: an existing conditioner takes the file's (or none)
            conditioner.set_request_scale(cfg.get("request_scale"))
        if conditioner.kind == "tokens":
            branch = {}
            for index, processor in enumerate(transformer.processors):
                if name not in processor.branches:
                    raise WeightsError(f"the pipeline's transformer has no {name!r} branch in block {index}.")
                for kv in ("k_proj.weight", "v_proj.weight"):
                    key = _branch_key(index, name, kv)
                    if key not in remaining:
                        raise WeightsError(f"{source} have no tensor {key}; {hint}")
                    branch[f"{index}.{kv}"] = remaining.pop(key)
            for index, processor in enumerate(transformer.processors):
                own = {k.split(".", 1)[1]: v for k, v in branch.items() if k.split(".", 1)[0] == str(index)}
                _load_module(processor.branches[name], own, what=f"{source} ({name} branch of block {index})",
                             hint=hint, prefix=_branch_key(index, name, ""))  # fmt: skip

    # LoRA adapters and a fully fine-tuned backbone.
    backbone = transformer.transformer
    lora = config.get("lora")
    if lora:
        if not has_lora(backbone):
            inject_lora(backbone, rank=lora["rank"], alpha=lora["alpha"], dropout=0.0, targets=lora["targets"])
            weight = backbone.proj_out.weight
            backbone.to(device=weight.device, dtype=weight.dtype)
        adapters = {lora_module_key(k): v for k, v in _take(remaining, "lora.").items()}
        own = {k: v for k, v in backbone.state_dict().items() if ".lora_" in k}
        check_state_dict(own, adapters, what=f"{source} (LoRA)", hint=hint)
        with torch.no_grad():
            for key, value in adapters.items():
                own[key].copy_(value)
    if dims.get("full"):
        full = _take(remaining, "backbone.")
        own = {k: v for k, v in backbone.state_dict().items() if ".processor." not in k and ".lora_" not in k}
        check_state_dict(own, full, what=f"{source} (backbone)", hint=hint)
        with torch.no_grad():
            for key, value in full.items():
                own[key].copy_(value)

    if remaining:
        first = sorted(remaining)[0]
        raise WeightsError(f"{source} hold {len(remaining)} tensors this pipeline does not use (e.g. {first}); {hint}")
    return config
