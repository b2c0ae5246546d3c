"""Training configuration: plain dataclasses, one per concern, each usable from a LightningCLI YAML.

Every field has the paper's value (FANTASYTALKING.md section 4) or, where the paper gives none,
ours, said so in the field's comment. A LightningModule takes these as constructor arguments
(dicts are accepted too), so ``model.init_args.optim.lr: 1e-4`` works in a YAML file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fantasytalking.errors import InputError

#: Wan linears LoRA adapts by default: self/cross attention (q, k, v, out), image keys/values, FFN.
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj", "ffn.net.0.proj", "ffn.net.2")


@dataclass
class BackboneConfig:
    """Where the frozen models come from.

    Attributes:
        weights: a weights folder for ``FantasyTalkingPipeline.from_pretrained`` (Wan2.1-I2V-14B,
            wav2vec2-base-960h, fantasytalking_model.ckpt; see docs/weights.md).
        preset: ``"tiny"``: random tiny models built in code (CPU tests and smoke runs), no files needed;
            ``"demo"``: the CPU-trainable demo size (:mod:`fantasytalking.training.presets`), random weights.
        vae: the ``demo`` preset's trained VAE folder (``WanVAETrainer.export_vae``); None: a random VAE.
        seed: seed of the preset's random weights.
        frozen_dtype: dtype of the frozen encoders (VAE, umT5, CLIP, wav2vec2); ``bfloat16`` on GPUs.
        backbone_dtype: dtype of the backbone's FROZEN Wan weights. ``bfloat16`` halves the memory of the
            14B (33 GB instead of 66 GB, so it fits one GPU with DDP) and needs ``precision: bf16-mixed``;
            Wan's fp32 islands (norms, time embedding, modulation) stay float32. Trained weights
            (conditioners, branches, LoRA) are always float32. FSDP needs ``float32`` (one dtype per shard).
        attention_backend: a diffusers attention backend name (``native``, ``flash``, ...), or None.
    """

    weights: str | None = None
    preset: Literal["tiny", "demo"] | None = None
    vae: str | None = None
    seed: int = 0
    frozen_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    backbone_dtype: Literal["float32", "bfloat16"] = "float32"
    attention_backend: str | None = None


@dataclass
class AudioConfig:
    """Audio conditioner training settings (sizes come from the loaded weights)."""

    dropout_p: float = 0.1  # paper: audio dropped with p = 0.1
    scale: float = 1.0


@dataclass
class FaceConfig:
    """Identity branch (paper section "facial-focused cross-attention"); sizes are ours."""

    face_dim: int = 128  # dlib's embedding; 512 for ArcFace
    dim: int = 1024  # identity-token width C
    num_queries: int = 16
    num_layers: int = 4
    num_heads: int = 16
    ff_mult: int = 4
    feature_tokens: int = 1  # ours: Q-Former keys per face feature vector (FaceConditioner)
    # ours: a FRESH conditioner (no init_from) reads its features standardised by the training shards' mean and
    # standard deviation, folded into input_proj once when fit starts (FaceConditioner.standardize_input); the
    # weights keep their names and shapes, so exports and inference are unchanged
    standardize: bool = False
    dropout_p: float = 0.1  # ours: like image/audio/prompt, so identity guidance is possible
    scale: float = 0.5  # paper: l2 = 0.5
    guided: bool = False  # ours: guidance keeps the identity (it comes from the image, which stays in every pass)
    encoder_spec: str = "dlib"  # the encoder of the shards' face_embedding ("dlib" or "arcface:PATH"), for inference


@dataclass
class MotionConfig:
    """Motion-intensity network (paper: MLP + ResNet layer + average pooling); sizes are ours."""

    hidden_dim: int = 256
    num_frequencies: int = 8
    dropout_p: float = 0.0  # ours: motion is not guided, so it is never dropped by default
    guided: bool = False


@dataclass
class ObjectiveConfig:
    """Flow-matching objective.

    ``sigma_sampling``: ``shifted_uniform`` draws ``u ~ U(0, 1)`` and uses the inference schedule's
    warp ``sigma = shift*u / (1 + (shift-1)*u)`` (the training timesteps then follow the same
    distribution as the 30 sampling steps); ``logit_normal`` draws ``u = sigmoid(N(mean, std))``
    (SD3) before the same warp (``shift: 1`` for plain logit-normal).
    """

    shift: float = 5.0  # the release's sampling shift
    sigma_sampling: Literal["shifted_uniform", "logit_normal"] = "shifted_uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    image_dropout_p: float = 0.1  # paper: image dropped with p = 0.1 (y and CLIP tokens set to zero)
    prompt_dropout_p: float = 0.1  # paper: prompt dropped with p = 0.1 (the empty prompt's embedding)
    sample_latents: bool = False  # VAE posterior sample instead of its mode for the clean latents
    # Keep each clip's frozen encodes (VAE latents, first-frame condition y, CLIP tokens) after its first
    # epoch (training/encode_cache.py): for small datasets on slow devices. cache_dir also keeps them on disk
    # for later runs and the next stage. Posterior modes only: not with sample_latents.
    cache_encodes: bool = False
    cache_dir: str | None = None
    # Reference drift (ours, not the paper's): with this probability per clip the reference frame that makes the
    # image condition (y and the CLIP tokens) is a drifted copy (objective.degrade_reference: VAE round trips,
    # blur, colour shift) while the target video keeps the true identity: meant to make the face tokens carry the
    # identity, as segmented generation needs (each segment's reference is the previous one's last frame).
    # 0 (default): the reference as is; the draws are then not made, so older recipes draw as before.
    reference_degrade_p: float = 0.0
    reference_colour_std: float = 0.05  # std of the per-channel gain and offset ([-1, 1] units)
    reference_blur_max: float = 1.0  # the Gaussian blur's standard deviation is drawn from U(0, this), pixels
    reference_round_trips_max: int = 2  # most VAE round trips

    def __post_init__(self) -> None:
        if not 0.0 <= self.reference_degrade_p <= 1.0:
            raise ValueError(f"objective.reference_degrade_p must lie in [0, 1], got {self.reference_degrade_p}")
        if self.reference_colour_std < 0 or self.reference_blur_max < 0 or self.reference_round_trips_max < 0:
            raise ValueError("objective.reference_colour_std, reference_blur_max and reference_round_trips_max "
                             "must not be negative")  # fmt: skip


@dataclass
class TrainableConfig:
    """What trains (see ``FantasyTalkingModule.configure_trainable``).

    ``mode``: ``conditioners`` (conditioners + their attention branches; the backbone frozen),
    ``lora`` (that plus LoRA adapters on the backbone's linears), ``full`` (everything but the
    frozen encoders).

    ``only``: narrows what ``mode`` trains to the named parts: a conditioner's name (``audio``,
    ``face``, ``motion``: the conditioner and its attention branch in every block) or ``backbone``
    (the Wan weights under ``full``, the LoRA adapters under ``lora``). Empty: all of them. E.g.
    ``only: [motion]`` fine-tunes the motion conditioner alone and leaves lip sync and identity as
    they were.
    """

    mode: Literal["conditioners", "lora", "full"] = "conditioners"
    only: list[str] = field(default_factory=list)
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    gradient_checkpointing: bool = False  # activation checkpointing of every Wan block (DDP and FSDP)


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (``lr`` 1e-4 from the paper; the rest is ours)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None  # None: the trainer's estimated optimiser steps
    min_lr_ratio: float = 0.0  # cosine/linear floor, as a fraction of lr


T = TypeVar("T")


def coerce(cls: type[T], value: T | dict[str, Any] | None, *, default: bool = True) -> T | None:
    """A config dataclass from an instance, a dict (YAML / hparams) or None (defaults, or None)."""
    if value is None:
        return cls() if default else None
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - names)
        if unknown:
            raise InputError(f"unknown {cls.__name__} setting(s) {unknown}; valid ones: {sorted(names)}.")
        data = dict(value)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)
    raise InputError(f"expected a {cls.__name__} or a dict, got {type(value).__name__}.")


def as_dict(config: Any) -> Any:
    """A JSON-friendly dict of a config dataclass (None stays None)."""
    if config is None:
        return None
    data = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
