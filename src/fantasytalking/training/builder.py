"""Building what training needs: the pipeline's models, and the face / motion conditioners on top.

* :func:`build_pipeline` gives a :class:`~fantasytalking.pipeline.FantasyTalkingPipeline` from a
  weights folder, or from the ``tiny`` preset (random tiny models of the 14B structure, written by
  :func:`fantasytalking.testing.make_tiny_weights` into a temporary folder and loaded from there), or
  from the ``demo`` preset (:func:`fantasytalking.training.presets.demo_pipeline`).
* :func:`attach_face` / :func:`attach_motion` add a conditioner to the stack and, for the face, its
  zero-initialised branch to every block.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from torch import nn

from fantasytalking.conditioning import ConditioningStack, FaceConditioner, MotionConditioner
from fantasytalking.errors import InputError
from fantasytalking.models import FantasyTalkingTransformer
from fantasytalking.pipeline import FantasyTalkingPipeline
from fantasytalking.training.config import BackboneConfig, FaceConfig, MotionConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_pipeline(config: BackboneConfig) -> FantasyTalkingPipeline:
    """All models of FantasyTalking on the CPU: the Wan backbone in ``config.backbone_dtype`` (its fp32 islands
    and the audio projector / branch in float32), the frozen encoders in ``config.frozen_dtype``.

    Loading the 14B directly in bfloat16 halves the host memory of every rank (33 GB instead of 66 GB);
    the audio weights that will train are then read again in float32, so they are not rounded.
    """
    if (config.weights is None) == (config.preset is None):
        raise InputError("set exactly one of backbone.weights (a weights folder) and backbone.preset ('tiny', 'demo').")
    if config.vae is not None and config.preset != "demo":
        raise InputError("backbone.vae is for the 'demo' preset; a weights folder brings its own VAE.")
    dtype = DTYPES[config.backbone_dtype]
    if config.preset == "tiny":
        pipe = tiny_pipeline(seed=config.seed)
    elif config.preset == "demo":
        from fantasytalking.training.presets import demo_pipeline

        # Audio conditioner only: the training module attaches face / motion from its own settings.
        pipe = demo_pipeline(vae_path=config.vae, seed=config.seed, conditioners=False)
    else:
        pipe = FantasyTalkingPipeline.from_pretrained(config.weights, device="cpu", dtype=dtype)
        if dtype != torch.float32:
            from fantasytalking.loading import load_fantasytalking_state, resolve_weights

            path = resolve_weights(config.weights).fantasytalking
            state = load_fantasytalking_state(path)
            for processor in pipe.transformer.processors:
                processor.float()
            pipe.audio_conditioner.proj_model.float()
            pipe.transformer.load_audio_branch(state, source=str(path))
            pipe.audio_conditioner.load_projector(state, source=str(path))
    frozen = DTYPES[config.frozen_dtype]
    for module in (pipe.vae, pipe.text_encoder, pipe.image_encoder, pipe.audio_conditioner.encoder):
        if module is None:
            continue
        param = next(module.parameters(), None)  # None: a parameter-free front end (the demo's log-mel)
        if param is not None and param.dtype != frozen:
            module.to(dtype=frozen)
        module.requires_grad_(False).eval()
    if config.attention_backend:
        pipe.transformer.set_attention_backend(config.attention_backend)
    return pipe


def tiny_pipeline(seed: int = 0) -> FantasyTalkingPipeline:
    """The tiny preset: random models of the 14B's structure (2 blocks of width 24), float32, CPU.

    Written by :func:`fantasytalking.testing.make_tiny_weights` into a temporary folder and loaded by
    ``FantasyTalkingPipeline.from_pretrained``: the same code path as the real weights.
    """
    from fantasytalking.testing.tiny import make_tiny_weights

    with tempfile.TemporaryDirectory(prefix="fantasytalking-tiny-") as tmp:
        make_tiny_weights(tmp, seed=seed)
        return FantasyTalkingPipeline.from_pretrained(tmp, device="cpu", dtype=torch.float32)


def _place(module: nn.Module, like: FantasyTalkingTransformer, dtype: torch.dtype | None) -> nn.Module:
    weight = like.transformer.proj_out.weight
    return module.to(device=weight.device, dtype=dtype or weight.dtype)


def attach_face(
    transformer: FantasyTalkingTransformer, conditioning: ConditioningStack, config: FaceConfig | dict[str, Any],
    *, encoder: Any | None = None, dtype: torch.dtype | None = None,
) -> FaceConditioner:  # fmt: skip
    """Add a :class:`FaceConditioner` and its zero-initialised ``face`` branch in every block.

    ``encoder``: a face encoder object (:mod:`fantasytalking.face`) for inference; training reads features.
    ``dtype``: of the new weights (default: the backbone's).
    """
    kwargs = dict(config) if isinstance(config, dict) else vars(config).copy()
    kwargs.pop("standardize", None)  # a training-time action (FantasyTalkingModule.setup), not a weight
    conditioner = FaceConditioner(**kwargs, encoder=encoder)
    _place(conditioner, transformer, dtype)
    transformer.add_token_branch("face", conditioner.token_dim)
    if dtype is not None:
        for processor in transformer.processors:
            processor.branches["face"].to(dtype=dtype)
    conditioning.add(conditioner)
    return conditioner


def attach_motion(
    transformer: FantasyTalkingTransformer, conditioning: ConditioningStack, config: MotionConfig | dict[str, Any],
    *, dtype: torch.dtype | None = None,
) -> MotionConditioner:
    """Add a :class:`MotionConditioner` whose embedding has the width of the timestep embedding."""
    kwargs = dict(config) if isinstance(config, dict) else vars(config).copy()
    kwargs.setdefault("embed_dim", transformer.inner_dim)
    if kwargs["embed_dim"] != transformer.inner_dim:
        raise InputError(
            f"the motion conditioner embeds to {kwargs['embed_dim']} but the backbone's timestep embedding is "
            f"{transformer.inner_dim}-d; they must match."
        )
    conditioner = MotionConditioner(**kwargs)
    _place(conditioner, transformer, dtype)
    conditioning.add(conditioner)
    return conditioner
