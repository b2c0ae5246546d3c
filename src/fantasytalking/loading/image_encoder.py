"""CLIP ViT-H/14 image encoder: Wan's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` or diffusers'
``image_encoder/`` + ``image_processor/``.

Wan uses only the vision tower of its XLM-RoBERTa CLIP (``visual.*``) and takes the output of the
second-to-last transformer block (``use_31_block=True``, no post norm). With transformers' ``CLIPVisionModel``
that is ``model(pixel_values, output_hidden_states=True).hidden_states[-2]`` (``hidden_states[0]`` is the
pre-normed embedding, ``[i]`` the output of block ``i``), as in diffusers' ``WanImageToVideoPipeline``.
The vision tower is pre-norm with exact (erf) GELU, LayerNorm eps 1e-5 and softmax scale ``head_dim ** -0.5``.

The original file has no config. Everything but the head count follows from shapes; the head count is taken as
``hidden / 80`` (ViT-H/14: 1280 wide, 16 heads of 80) unless a sidecar
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth.config.json`` holding ``CLIPVisionConfig`` fields
(e.g. ``{"num_attention_heads": 2}``) says otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from fantasytalking.errors import WeightsError

from .files import as_state_dict, config_model_type, load_torch_file, read_sidecar_config, sidecar_path
from .hf import checked_from_pretrained, quiet_transformers
from .keys import assign_state_dict, check_no_meta, check_state_dict, expected_shapes
from .mappings import clip_wan_key_for_hf, clip_wan_to_hf
from .wan import WAN_CLIP_FILE

__all__ = ["CLIP_HEAD_DIM", "clip_image_processor", "infer_clip_vision_config", "load_image_encoder"]

CLIP_HEAD_DIM = 80  # ViT-H/14: 1280 / 16 heads
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_HINT = f"Re-download {WAN_CLIP_FILE} from Wan-AI/Wan2.1-I2V-14B-720P."


def _shape(state: Mapping[str, torch.Tensor], key: str, file: Path) -> tuple[int, ...]:
    if key not in state:
        raise WeightsError(f"CLIP weights in {file} lack {key}, needed to size the model: {_HINT}")
    return tuple(state[key].shape)


def infer_clip_vision_config(state: Mapping[str, torch.Tensor], file: Path) -> CLIPVisionConfig:
    """``CLIPVisionConfig`` from Wan CLIP shapes (+ sidecar overrides, see the module docstring).

    width and patch from ``visual.patch_embedding.weight`` [W, 3, p, p]; image size from
    ``visual.pos_embedding`` [1, 1 + (S/p)^2, W]; MLP width from ``visual.transformer.0.mlp.0.weight`` [4W, W];
    layers by counting ``visual.transformer.N``; projection width from ``visual.head`` [W, out] (unused).
    """
    width, _, patch, _ = _shape(state, "visual.patch_embedding.weight", file)
    tokens = _shape(state, "visual.pos_embedding", file)[-2]
    grid = math.isqrt(tokens - 1)
    intermediate = _shape(state, "visual.transformer.0.mlp.0.weight", file)[0]
    layers = 1 + max(int(m[1]) for k in state if (m := re.match(r"visual\.transformer\.(\d+)\.", k)))
    side = read_sidecar_config(file)
    if "num_attention_heads" not in side and width % CLIP_HEAD_DIM:
        raise WeightsError(
            f"cannot tell the head count of the CLIP in {file} (width {width} is not a multiple of ViT-H/14's head "
            f'size {CLIP_HEAD_DIM}): add {sidecar_path(file).name} with {{"num_attention_heads": N}} next to it.'
        )
    fields: dict[str, Any] = {
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": width // CLIP_HEAD_DIM,
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": "gelu",  # open-clip ViT-H/14 in Wan: nn.GELU (erf), not quick_gelu
        "layer_norm_eps": 1e-5,
        "projection_dim": state["visual.head"].shape[-1] if "visual.head" in state else 1024,
    }
    fields.update(side)
    return CLIPVisionConfig(**fields)


def clip_image_processor(image_size: int) -> CLIPImageProcessor:
    """Wan's CLIP preprocessing: bicubic resize to ``image_size`` square (no crop), CLIP mean/std."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=3,  # PIL.Image.BICUBIC
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        do_convert_rgb=True,
    )


def load_image_encoder(
    path: str | Path, *, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """Load the CLIP vision tower and its image processor.

    ``path`` is a Wan folder (original: the ``.pth``; diffusers: ``image_encoder/`` + ``image_processor/``), the
    ``.pth`` itself, or an ``image_encoder/`` folder.
    """
    path = Path(path)
    folder = None
    if path.is_dir() and (path / "image_encoder").is_dir():
        folder, proc_dir = path / "image_encoder", path / "image_processor"
    elif path.is_dir() and config_model_type(path) in ("clip_vision_model", "clip"):
        folder, proc_dir = path, path.parent / "image_processor"
    if folder is not None:
        model = checked_from_pretrained(
            CLIPVisionModel, folder, dtype=dtype, what="CLIP image encoder",
            hint="Re-download the image_encoder folder of Wan-AI/Wan2.1-I2V-14B-720P-Diffusers.",
            unused_prefixes=("visual_projection.",),  # a CLIPVisionModelWithProjection checkpoint: head unused
        )  # fmt: skip
        if (proc_dir / "preprocessor_config.json").is_file():
            try:
                with quiet_transformers():
                    processor = CLIPImageProcessor.from_pretrained(str(proc_dir), local_files_only=True)
            except Exception as err:
                raise WeightsError(f"cannot load the image processor in {proc_dir} ({err}): re-download it.") from None
        else:
            processor = clip_image_processor(model.config.image_size)
        return model.to(device), processor

    file = path if path.is_file() else path / WAN_CLIP_FILE
    model = _load_wan_clip(file, dtype=dtype, device=device)
    return model, clip_image_processor(model.config.image_size)


def _load_wan_clip(file: Path, *, dtype: torch.dtype, device: str | torch.device) -> CLIPVisionModel:
    state = as_state_dict(load_torch_file(file), file)
    config = infer_clip_vision_config(state, file)
    with init_empty_weights():
        model = CLIPVisionModel(config)
    expected = expected_shapes(model)
    # transformers versions differ on whether the tower sits under "vision_model.".
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in expected) else ""
    hf, source, unknown = clip_wan_to_hf(state, prefix)

    def rename(key: str) -> str:
        return clip_wan_key_for_hf(key, prefix) if key in source or key in expected else key

    what = f"CLIP weights in {file}"
    got = {**{k: tuple(v.shape) for k, v in hf.items()}, **{k: tuple(state[k].shape) for k in unknown}}
    check_state_dict(expected, got, what=what, hint=_HINT, rename=rename)
    assign_state_dict(model, hf, what=what, hint=_HINT, dtype=dtype, device=device, rename=rename, expected=expected)
    del state, hf
    check_no_meta(model, what=what, hint=_HINT, rename=rename)
    return model.to(device).eval()
