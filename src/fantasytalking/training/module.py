"""LightningModules of the paper's two training stages, over one shared base.

:class:`FantasyTalkingModule` holds the FantasyTalking transformer, the conditioning stack (audio,
optionally face and motion) and, outside the module's parameters, the frozen VAE, umT5 and CLIP of
the inference pipeline, whose batch helpers it reuses so that training sees exactly the inputs
inference gives. A training step (``compute_loss``) is, per batch:

1. clean latents ``x_0 = VAE(video)`` (or the shards' cached ``latents``), the image condition
   ``y = [mask, VAE(first frame, zeros)]`` and CLIP tokens of the first frame, umT5 of the prompt;
2. condition dropout for guidance (p = 0.1 each): image (``y`` and CLIP tokens zeroed), prompt
   (the empty prompt's embedding), audio and identity (branch scale 0 for that sample);
3. ``sigma`` with the schedule's shift, ``x_t = (1-sigma) x_0 + sigma noise``, target ``noise - x_0``;
4. the squared error reduced per sample by :meth:`~FantasyTalkingModule.reduce_loss` (stage two:
   the lip-tracing mask).

Subclass and override one method to change one thing: ``reduce_loss`` (the loss),
``configure_trainable`` (what trains), ``configure_optimizers`` (optimiser and schedule),
``sample_sigmas`` (noise levels), ``prepare_inputs`` (conditions).

Randomness: every draw of a step comes from a CPU generator derived from
``(seed, global_step, micro-batch, rank)``, so a resumed run repeats the uninterrupted one exactly.

Checkpoints: the frozen pretrained weights (Wan backbone unless trained, wav2vec2) are left out of
the checkpoint, which therefore holds only what training changed; loading one fills them from the
weights folder, and every other key must match exactly. ``checkpoint["fantasytalking"]`` holds the
resolved configuration and what :func:`~fantasytalking.training.export_checkpoint` needs.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

import fantasytalking
from fantasytalking.conditioning import AudioConditioner, Condition
from fantasytalking.conditioning.audio import AlignmentMode
from fantasytalking.errors import InputError, WeightsError
from fantasytalking.models import BranchInput
from fantasytalking.pipeline import DEFAULT_PROMPT
from fantasytalking.training.builder import DTYPES, attach_face, attach_motion, build_pipeline
from fantasytalking.training.config import (
    AudioConfig,
    BackboneConfig,
    FaceConfig,
    MotionConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainableConfig,
    as_dict,
    coerce,
)
from fantasytalking.training.encode_cache import EncodeCache
from fantasytalking.training.lora import inject_lora
from fantasytalking.training.objective import (
    degrade_reference,
    flow_matching_pair,
    latent_lip_mask,
    masked_mean,
    sample_sigmas,
    step_generator,
)

#: Version of ``checkpoint["fantasytalking"]``.
CHECKPOINT_FORMAT_VERSION = 1
_ENCODER_KEY = re.compile(r"^conditioning\.conditioners\.[^.]+\.encoder\.")
_WRAPPER_PARTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})

log = logging.getLogger(__name__)


def is_pretrained_key(key: str) -> bool:
    """Keys of the LightningModule's state that come from the weights folder (Wan backbone, speech/face encoders)."""
    if _ENCODER_KEY.match(key):
        return True
    return key.startswith("transformer.transformer.") and ".processor." not in key and ".lora_" not in key


def is_conditioning_key(key: str) -> bool:
    """Keys of the conditioners and of their attention branches in every block (what trains by default)."""
    if key.startswith("conditioning.") and not _ENCODER_KEY.match(key):
        return True
    return key.startswith("transformer.") and ".processor." in key


_CONDITIONER_KEY = re.compile(r"^conditioning\.conditioners\.([^.]+)\.")
_BRANCH_KEY = re.compile(r"\.processor\.branches\.([^.]+)\.")


def trainable_part(key: str) -> str:
    """The part a trainable key belongs to, as ``trainable.only`` names it: a conditioner's name
    (its own weights and its attention branch in every block) or ``"backbone"`` (Wan weights, LoRA)."""
    if match := _CONDITIONER_KEY.match(key):
        return match.group(1)
    if ".processor." in key:
        match = _BRANCH_KEY.search(key)  # the audio branch keeps the release's names, outside ``branches``
        return match.group(1) if match else "audio"
    return "backbone"


def _clean_key(key: str) -> str:
    """A state key without the names FSDP / activation checkpointing / torch.compile wrappers insert."""
    return ".".join(part for part in key.split(".") if part not in _WRAPPER_PARTS)


@dataclass
class TrainingInputs:
    """What one step feeds the backbone (after condition dropout)."""

    latents: torch.Tensor  # (B, 16, F, h, w) clean latents x_0
    image_condition: torch.Tensor  # (B, 20, F, h, w) y = [mask, image latent]
    image_tokens: torch.Tensor  # (B, S_img, image_dim) CLIP tokens
    text: torch.Tensor  # (B, text_len, text_dim) umT5 embeddings
    branches: dict[str, BranchInput]
    time_embedding: torch.Tensor | None  # (B, D) or None
    num_frames: int
    keep: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) bool per dropped condition


@dataclass
class TrainingLoss:
    """The loss of one batch and what tests and callbacks may want to look at."""

    loss: torch.Tensor  # () mean of per_sample
    per_sample: torch.Tensor  # (B,)
    prediction: torch.Tensor  # (B, 16, F, h, w) predicted velocity
    target: torch.Tensor  # (B, 16, F, h, w) noise - x_0
    sigmas: torch.Tensor  # (B,)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class FantasyTalkingModule(pl.LightningModule):
    """Shared training logic of both stages (see the module docstring).

    Args:
        backbone: where the frozen models come from (:class:`BackboneConfig`; a weights folder or ``tiny``).
        audio: audio conditioner settings (:class:`AudioConfig`); its alignment mode is the stage's.
        face: identity branch (:class:`FaceConfig`), or None for none.
        motion: motion-intensity conditioner (:class:`MotionConfig`), or None for none.
        objective: flow-matching settings and image / prompt dropout (:class:`ObjectiveConfig`).
        trainable: what trains (:class:`TrainableConfig`).
        optim: AdamW and the LR schedule (:class:`OptimConfig`).
        seed: seed of every random draw of training (noise, sigma, dropout, lip-mask branch).
        init_from: a training checkpoint to start from (stage two: a stage-one checkpoint), weights only; or an
            inference export (``.safetensors``, e.g. the shipped demo model) to fine-tune.
        init_from_ema: take ``init_from``'s EMA weights instead of its trained ones.
    """

    stage: ClassVar[str] = "custom"
    audio_mode: ClassVar[AlignmentMode] = "frame"

    def __init__(
        self,
        backbone: BackboneConfig | dict[str, Any] | None = None,
        audio: AudioConfig | dict[str, Any] | None = None,
        face: FaceConfig | dict[str, Any] | None = None,
        motion: MotionConfig | dict[str, Any] | None = None,
        objective: ObjectiveConfig | dict[str, Any] | None = None,
        trainable: TrainableConfig | dict[str, Any] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
        seed: int = 0,
        init_from: str | None = None,
        init_from_ema: bool = False,
    ) -> None:
        super().__init__()
        self.backbone_config: BackboneConfig = coerce(BackboneConfig, backbone)  # type: ignore[assignment]
        self.audio_config: AudioConfig = coerce(AudioConfig, audio)  # type: ignore[assignment]
        self.face_config: FaceConfig | None = coerce(FaceConfig, face, default=False)
        self.motion_config: MotionConfig | None = coerce(MotionConfig, motion, default=False)
        self.objective_config: ObjectiveConfig = coerce(ObjectiveConfig, objective)  # type: ignore[assignment]
        self.trainable_config: TrainableConfig = coerce(TrainableConfig, trainable)  # type: ignore[assignment]
        self.optim_config: OptimConfig = coerce(OptimConfig, optim)  # type: ignore[assignment]
        self.seed = int(seed)
        self.init_from = init_from
        # Hyper-parameters re-create the module in load_from_checkpoint: its weights come from the
        # checkpoint itself, so the init checkpoint is not needed (nor kept) there.
        self.save_hyperparameters({**self._config_dicts(), "seed": self.seed, "init_from": None, "init_from_ema": False})

        pipe = build_pipeline(self.backbone_config)
        self.pipe = pipe  # a DiffusionPipeline, not an nn.Module: its frozen encoders are not in the state dict
        self.transformer = pipe.transformer
        self.conditioning = pipe.conditioning
        audio_conditioner: AudioConditioner = self.conditioning["audio"]  # type: ignore[assignment]
        audio_conditioner.mode = self.audio_mode
        audio_conditioner.dropout_p = self.audio_config.dropout_p
        audio_conditioner.scale = self.audio_config.scale
        if self.face_config is not None:
            attach_face(self.transformer, self.conditioning, self.face_config, dtype=torch.float32)
        if self.motion_config is not None:
            attach_motion(self.transformer, self.conditioning, self.motion_config, dtype=torch.float32)

        self.lora_config: dict[str, Any] | None = None
        self.configure_trainable()
        for _, param in self.trainable_named_parameters():
            param.data = param.data.float()  # trained weights and their optimiser state: always float32
        self._omitted_keys = self._pretrained_frozen_keys()
        self._cast_frozen_backbone(DTYPES[self.backbone_config.backbone_dtype])
        if self.trainable_config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.register_load_state_dict_post_hook(_accept_omitted_pretrained)
        self._frozen_device: torch.device | None = None
        self._empty_prompt: torch.Tensor | None = None
        self._cache: EncodeCache | None = None
        self._face_standardized = False
        self._face_from_init = True  # init_from (if any) carries the face conditioner; _load_export may say not
        self._condition_frame0_only: bool | None = None
        if init_from is not None:
            self.load_weights(init_from, ema=init_from_ema)

    # ------------------------------------------------------------------ configuration

    def _config_dicts(self) -> dict[str, Any]:
        return {
            "backbone": as_dict(self.backbone_config),
            "audio": as_dict(self.audio_config),
            "face": as_dict(self.face_config),
            "motion": as_dict(self.motion_config),
            "objective": as_dict(self.objective_config),
            "trainable": as_dict(self.trainable_config),
            "optim": as_dict(self.optim_config),
        }

    def resolved_config(self) -> dict[str, Any]:
        """Every setting of this run, as JSON-friendly data (written into checkpoints and exports)."""
        trainer = self._trainer
        return {
            "stage": self.stage,
            "module": f"{type(self).__module__}.{type(self).__qualname__}",
            **self._config_dicts(),
            "seed": self.seed,
            "init_from": self.init_from,
            "audio_mode": self.audio_conditioner.mode,
            "conditioners": self.conditioning.names,
            "backbone_dims": {"num_layers": self.transformer.num_layers, "inner_dim": self.transformer.inner_dim},
            "trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "trainer": None if trainer is None else {
                "max_steps": trainer.max_steps, "accumulate_grad_batches": trainer.accumulate_grad_batches,
                "precision": str(trainer.precision), "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
            },
            "fantasytalking_version": fantasytalking.__version__,
        }

    def export_info(self) -> dict[str, Any]:
        """What an export needs to rebuild the conditioning in a pipeline (see ``training.export``)."""
        audio = self.audio_conditioner
        return {
            "stage": self.stage,
            "audio": {
                "audio_in_dim": audio.audio_in_dim, "proj_dim": audio.token_dim, "mode": audio.mode,
                "scale": audio.scale, "window_positions": audio.window_positions,
            },
            "conditioners": {
                c.name: c.config() for c in self.conditioning if c.name != "audio" and hasattr(c, "config")
            },
            "lora": self.lora_config,
            "backbone": {
                "num_layers": self.transformer.num_layers,
                "inner_dim": self.transformer.inner_dim,
                "full": self.trainable_config.mode == "full",
            },
        }

    @property
    def audio_conditioner(self) -> AudioConditioner:
        return self.conditioning["audio"]  # type: ignore[return-value]

    # ------------------------------------------------------------------ what trains

    def configure_trainable(self) -> None:
        """Set ``requires_grad`` (and add LoRA adapters): the one method to override to train something else.

        Default, by ``trainable.mode``: ``conditioners`` trains the conditioners and their attention
        branches in every block (audio ``k_proj``/``v_proj``, identity branch); ``lora`` adds LoRA
        adapters on the backbone's linears and trains them too; ``full`` trains the whole backbone as
        well. Speech and face encoders, the VAE, umT5 and CLIP never train. ``trainable.only`` then keeps
        the named parts (:func:`trainable_part`) and freezes the rest.
        """
        cfg = self.trainable_config
        self.requires_grad_(False)
        if cfg.mode == "lora":
            self.lora_config = inject_lora(self.transformer.transformer, rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                                           dropout=cfg.lora_dropout, targets=cfg.lora_targets)  # fmt: skip
        only = set(cfg.only)
        parts = {"backbone", *self.conditioning.names}
        if unknown := sorted(only - parts):
            raise InputError(f"trainable.only names {unknown}, which this model lacks; choose from {sorted(parts)}.")
        for name, param in self.named_parameters():
            lora = cfg.mode == "lora" and ".lora_" in name
            full = cfg.mode == "full" and name.startswith("transformer.")
            chosen = not only or trainable_part(name) in only
            param.requires_grad_((is_conditioning_key(name) or lora or full) and chosen)

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def _cast_frozen_backbone(self, dtype: torch.dtype) -> None:
        """Store the frozen Wan weights in ``dtype``, except Wan's fp32 modules (norms, time embedding, modulation)."""
        if dtype == torch.float32:
            return
        backbone = self.transformer.transformer
        keep = set(getattr(backbone, "_keep_in_fp32_modules", None) or ())
        for name, param in backbone.named_parameters():
            if param.requires_grad or keep & set(name.split(".")) or not is_pretrained_key(f"transformer.transformer.{name}"):
                continue
            param.data = param.data.to(dtype)

    def _pretrained_frozen_keys(self) -> frozenset[str]:
        """Keys a checkpoint leaves out because the weights folder gives them back. Under ``full`` the backbone
        is this run's (or ``init_from``'s) even where ``trainable.only`` freezes it, so it stays in."""
        trainable = {n for n, _ in self.trainable_named_parameters()}
        full = self.trainable_config.mode == "full"
        return frozenset(k for k in self.state_dict(keep_vars=True)
                         if is_pretrained_key(k) and k not in trainable and not (full and k.startswith("transformer.")))  # fmt: skip

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the trainable parameters (no weight decay on norms, biases and 1-d tensors) + LR schedule."""
        cfg = self.optim_config
        decay, no_decay = [], []
        for _, param in self.trainable_named_parameters():
            (decay if param.ndim >= 2 else no_decay).append(param)
        if not decay and not no_decay:
            raise InputError("nothing to train: every parameter is frozen; check trainable.mode.")
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        total = cfg.total_steps
        if total is None and cfg.schedule != "constant":
            estimated = self.trainer.estimated_stepping_batches
            if not math.isfinite(estimated):
                raise InputError("optim.schedule needs optim.total_steps (or trainer.max_steps) to be set.")
            total = int(estimated)
        schedule = _LRSchedule(cfg.schedule, cfg.warmup_steps, total or 1, cfg.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ inputs

    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if trainer is not None and isinstance(trainer.strategy, FSDPStrategy) and self.backbone_config.backbone_dtype != "float32":
            raise InputError("FSDP shards one dtype per Wan block: set model.init_args.backbone.backbone_dtype: float32 "
                             "(precision bf16-mixed still computes in bf16).")  # fmt: skip
        # The datamodule's motion statistics (stats.json: raw intensity -> [0, 1] by p1/p99) go into
        # the motion conditioner's buffers, so they are saved with the model for inference.
        stats = getattr(getattr(self._trainer, "datamodule", None), "motion_stats", None)
        if stats and "motion" in self.conditioning:
            self.conditioning["motion"].set_statistics_from(stats)  # type: ignore[operator]
        if stage == "fit":
            self._standardize_face_input()

    def _standardize_face_input(self) -> None:
        """``face.standardize``: fold the training shards' face-feature statistics into a fresh conditioner's
        ``input_proj`` (once per module; weights from ``init_from`` or a resumed checkpoint already carry it)."""
        if self.face_config is None or not self.face_config.standardize or self._face_standardized:
            return
        if self.init_from is not None and self._face_from_init:
            log.info("face.standardize: the face conditioner comes from %s, which already reads its features as "
                     "trained; nothing to fold in", self.init_from)  # fmt: skip
            self._face_standardized = True
            return
        datamodule = getattr(self._trainer, "datamodule", None)
        if not callable(getattr(datamodule, "face_embedding_stats", None)):
            raise InputError("face.standardize needs the training shards' face embeddings: use "
                             "fantasytalking.data.TalkingClipDataModule, or set face.standardize false.")  # fmt: skip
        mean, std = datamodule.face_embedding_stats()  # type: ignore[union-attr]  # (E,), (E,)
        self.conditioning["face"].standardize_input(torch.as_tensor(mean), torch.as_tensor(std))  # type: ignore[operator]
        self._face_standardized = True

    def _place_frozen(self) -> None:
        """Move the frozen VAE, umT5 and CLIP (not part of the module's parameters) to the module's device."""
        device = self.device
        if self._frozen_device != device:
            for module in (self.pipe.vae, self.pipe.text_encoder, self.pipe.image_encoder):
                module.to(device)
            self._frozen_device = device
            self._empty_prompt = None

    def step_generator(self, batch_idx: int, phase: str = "train") -> torch.Generator:
        """The CPU generator of one micro-batch: a function of (seed, phase, step, micro-batch, rank) only."""
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else 0
        if phase == "train":
            accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
            step = trainer.global_step if trainer is not None else 0
            return step_generator(self.seed, phase, step, batch_idx % accumulate, rank)
        return step_generator(self.seed, phase, batch_idx, rank)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """umT5 embeddings ``(B, text_len, text_dim)``; the empty prompt's is computed once and reused."""
        device = self.device
        if all(p == "" for p in prompts):
            if self._empty_prompt is None:
                self._empty_prompt = self.pipe.encode_prompt([""], device, torch.float32)  # (1, L, D)
            return self._empty_prompt.expand(len(prompts), -1, -1)
        return self.pipe.encode_prompt(prompts, device, torch.float32)

    def draw_dropout(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Keep masks ``(B,)`` of the image and the prompt (True = kept), each dropped with its probability."""
        cfg = self.objective_config
        return {
            "image": torch.rand(batch_size, generator=generator) >= cfg.image_dropout_p,
            "prompt": torch.rand(batch_size, generator=generator) >= cfg.prompt_dropout_p,
        }

    def condition_inputs(self, batch: Mapping[str, Any], num_frames: int) -> dict[str, dict[str, Any]]:
        """Raw inputs of every conditioner of the stack, from the batch."""
        inputs: dict[str, dict[str, Any]] = {}
        audio = self.audio_conditioner
        if "audio_features" in batch:
            features = batch["audio_features"]  # (B, L, A) cached in the shards
        elif "audio" in batch:
            features = audio.extract_features(batch["audio"])  # (B, L, A)
        else:
            raise InputError("the batch has neither 'audio' nor 'audio_features'; the audio conditioner needs one.")
        inputs["audio"] = {"features": features, "num_frames": num_frames}
        if "face" in self.conditioning:
            if "face_embedding" not in batch:
                raise InputError("the model has a face conditioner but the batch has no 'face_embedding'; "
                                 "load that field from the shards.")  # fmt: skip
            inputs["face"] = {"features": batch["face_embedding"]}  # (B, E)
        if "motion" in self.conditioning:
            if "motion" not in batch:
                raise InputError("the model has a motion conditioner but the batch has no 'motion' intensities.")
            inputs["motion"] = {"intensities": batch["motion"].float()}  # (B, 2) in [0, 1]
        for name in self.conditioning.names:
            if name not in inputs:
                raise InputError(f"no batch input is known for the {name!r} conditioner; override condition_inputs.")
        return inputs

    def prepare_inputs(self, batch: Mapping[str, Any], generator: torch.Generator) -> TrainingInputs:
        """Latents, image condition, text and conditioning of one batch, with condition dropout applied."""
        self._place_frozen()
        device = self.device
        video = batch["video"]  # (B, 3, N, H, W) in [-1, 1]
        batch_size, _, num_frames = video.shape[:3]
        first = video[:, :, 0].to(device)  # (B, 3, H, W): the reference image is the clip's first frame
        with torch.no_grad():
            keys = self.encode_keys(video)
            cached = self.cached_encodes(keys)
            if cached is not None:
                latents, y, clip = (cached[k].to(device) for k in ("latents", "y", "clip"))
            else:
                if "latents" in batch:
                    latents = batch["latents"].to(device, torch.float32)  # (B, 16, F, h, w) cached in the shards
                else:
                    latents = self.pipe.encode_video(video.to(device), sample=self.objective_config.sample_latents,
                                                     generator=generator).to(device)  # fmt: skip
                y = self.pipe.encode_condition(first, num_frames, device).float()  # (B, 20, F, h, w)
                clip = self.pipe.encode_image(first, device, torch.float32)  # (B, S_img, image_dim)
                self.store_encodes(keys, latents, y, clip)
            y, clip = self.degrade_reference_condition(first, y, clip, generator)
        keep = self.draw_dropout(batch_size, generator)
        keep_image = keep["image"].to(device)
        y = y * keep_image.view(-1, 1, 1, 1, 1).to(y.dtype)  # dropped image: no frame given, zero latent
        clip = clip * keep_image.view(-1, 1, 1).to(clip.dtype)
        prompts = list(batch.get("prompt") or [DEFAULT_PROMPT] * batch_size)
        prompts = [p if k else "" for p, k in zip(prompts, keep["prompt"].tolist())]
        text = self.encode_text(prompts)  # (B, text_len, text_dim)

        conditions = self.conditioning(self.condition_inputs(batch, num_frames))
        conditions = self.conditioning.drop(conditions, generator)
        keep.update({name: _kept(c) for name, c in conditions.items() if c.tokens is not None})
        branches, time_embedding = self.conditioning.to_backbone(conditions)
        return TrainingInputs(latents=latents, image_condition=y, image_tokens=clip, text=text, branches=branches,
                              time_embedding=time_embedding, num_frames=num_frames, keep=keep)  # fmt: skip

    def degrade_reference_condition(
        self, first: torch.Tensor, y: torch.Tensor, clip: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image condition ``y (B, m + z, F, h, w)`` and CLIP tokens ``clip (B, S, D)`` with the reference of
        each clip picked (probability ``objective.reference_degrade_p``) replaced by a drifted copy
        (:func:`~fantasytalking.training.objective.degrade_reference`); the target latents stay the clip's own.

        The drifted frame's whole condition is encoded, as segmented inference encodes it, unless the VAE's
        latent frames after the first do not depend on the first video frame (checked once, on two probe frames):
        then only latent frame 0 is encoded, which costs one frame instead of the clip. The demo VAE is such a VAE;
        Wan's carries the first frame forward through its causal cache, so it gets the whole encode.
        """
        cfg = self.objective_config
        if cfg.reference_degrade_p <= 0:
            return y, clip  # no draws: older recipes keep their random streams
        pick = torch.rand(first.shape[0], generator=generator) < cfg.reference_degrade_p  # (B,)
        if not pick.any():
            return y, clip
        drifted = degrade_reference(first[pick.to(first.device)], generator, colour_std=cfg.reference_colour_std,
                                    blur_max=cfg.reference_blur_max, round_trips_max=cfg.reference_round_trips_max,
                                    round_trip=self.vae_round_trip)  # fmt: skip  (b, 3, H, W)
        drifted = drifted.to(self.device)
        pick = pick.to(y.device)
        y = y.clone()
        if self.condition_sees_first_frame_only():
            mask_channels = self.pipe.vae_scale_factor_temporal  # y = [mask, latents]
            y[pick, mask_channels:, :1] = self.pipe.encode_video(drifted[:, :, None]).to(y.dtype)  # (b, z, 1, h, w)
        else:
            video_frames = (y.shape[2] - 1) * self.pipe.vae_scale_factor_temporal + 1  # N from F = (N - 1) / s + 1
            y[pick] = self.pipe.encode_condition(drifted, video_frames, self.device).to(y.dtype)  # (b, m + z, F, h, w)
        clip = clip.clone()
        clip[pick] = self.pipe.encode_image(drifted, self.device, clip.dtype)  # (b, S, D)
        return y, clip

    def condition_sees_first_frame_only(self) -> bool:
        """Whether the condition's latent frames after the first are the same whatever the first video frame is
        (probed once with two different first frames of a 3-latent-frame condition, so exact, not a tolerance)."""
        if self._condition_frame0_only is None:
            stride = self.pipe.vae_scale_factor_temporal
            size = 8 * self.pipe.vae_scale_factor_spatial
            probes = torch.stack([torch.full((3, size, size), -0.5), torch.full((3, size, size), 0.5)])  # (2, 3, s, s)
            with torch.no_grad():
                y = self.pipe.encode_condition(probes.to(self.device), 1 + 2 * stride, self.device)  # (2, m + z, 3, ...)
            self._condition_frame0_only = bool(torch.equal(y[0, :, 1:], y[1, :, 1:]))
        return self._condition_frame0_only

    def vae_round_trip(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, 3, H, W)`` in ``[-1, 1]`` through the VAE's encode (mode) and decode, as the
        frames of a generated segment are."""
        # imported here, not with the package: `python -m fantasytalking.training.vae` must be the first to import it
        from fantasytalking.training.vae import round_trip

        return round_trip(self.pipe.vae, frames[:, :, None])[:, :, 0].to(frames.device)  # (B, 3, H, W)

    def _encode_cache(self) -> EncodeCache | None:
        cfg = self.objective_config
        if not cfg.cache_encodes:
            return None
        if cfg.sample_latents:  # a cached posterior sample would be the same draw every epoch
            raise InputError("objective.cache_encodes keeps posterior modes; set sample_latents: false to use it.")
        if self._cache is None:
            salt = json.dumps(as_dict(self.backbone_config), sort_keys=True, default=str)
            self._cache = EncodeCache(cfg.cache_dir, salt=salt)
        return self._cache

    def encode_keys(self, video: torch.Tensor) -> list[str] | None:
        """Cache keys of a batch of clips ``(B, 3, N, H, W)``, or None when caching is off."""
        cache = self._encode_cache()
        return None if cache is None else [cache.key(v) for v in video]

    def cached_encodes(self, keys: list[str] | None) -> dict[str, torch.Tensor] | None:
        """The cached ``latents (B, 16, F, h, w)``, ``y (B, 20, F, h, w)``, ``clip (B, S, D)`` of a batch, or None
        unless every clip of the batch is cached."""
        if keys is None:
            return None
        cache = self._encode_cache()
        entries = [cache.get(k) for k in keys]  # type: ignore[union-attr]
        if any(e is None for e in entries):
            return None
        return {k: torch.stack([e[k] for e in entries]) for k in ("latents", "y", "clip")}  # type: ignore[index]

    def store_encodes(self, keys: list[str] | None, latents: torch.Tensor, y: torch.Tensor, clip: torch.Tensor) -> None:
        if keys is None:
            return
        cache = self._encode_cache()
        for i, key in enumerate(keys):
            cache.put(key, {"latents": latents[i].float(), "y": y[i].float(), "clip": clip[i].float()})  # type: ignore[union-attr]

    # ------------------------------------------------------------------ loss

    def sample_sigmas(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Noise levels ``(B,)`` (see :class:`~fantasytalking.training.ObjectiveConfig`)."""
        cfg = self.objective_config
        return sample_sigmas(batch_size, generator, shift=cfg.shift, sampling=cfg.sigma_sampling,
                             logit_mean=cfg.logit_mean, logit_std=cfg.logit_std)  # fmt: skip

    def reduce_loss(
        self, error: torch.Tensor, batch: Mapping[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample loss ``(B,)`` from the squared error ``(B, C, F, h, w)``; base: the plain mean."""
        return error.flatten(1).mean(dim=1), {}

    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> TrainingLoss:
        """The flow-matching loss of one batch (every random draw from ``generator``)."""
        inputs = self.prepare_inputs(batch, generator)
        x0 = inputs.latents  # (B, 16, F, h, w)
        sigmas = self.sample_sigmas(x0.shape[0], generator)  # (B,)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
        x_t, target, timesteps = flow_matching_pair(x0, noise, sigmas)
        model_input = torch.cat([x_t, inputs.image_condition], dim=1)  # (B, 16 + 20, F, h, w)
        prediction = self.transformer(
            model_input, timesteps, inputs.text, inputs.image_tokens,
            branches=inputs.branches, time_embedding=inputs.time_embedding,
        )  # (B, 16, F, h, w)
        error = (prediction.float() - target).square()
        per_sample, logs = self.reduce_loss(error, batch, generator)
        logs = {**logs, **{f"kept_{k}": v.float().mean() for k, v in inputs.keep.items()}}
        return TrainingLoss(per_sample.mean(), per_sample, prediction, target, sigmas, logs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch, self.step_generator(batch_idx))
        batch_size = out.per_sample.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=batch_size)
        for key, value in out.logs.items():
            self.log(f"train/{key}", value, batch_size=batch_size)
        return out.loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch, self.step_generator(batch_idx, phase="val"))  # the same draws every time
        self.log("val/loss", out.loss, prog_bar=True, batch_size=out.per_sample.shape[0], sync_dist=True)
        return out.loss

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        omitted = sorted(k for k in state if _clean_key(k) in self._omitted_keys)
        for key in omitted:
            del state[key]
        checkpoint["fantasytalking"] = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "stage": self.stage,
            "config": self.resolved_config(),
            "export": self.export_info(),
            "omitted_pretrained_keys": len(omitted),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("fantasytalking")
        if info is None:
            raise WeightsError("the checkpoint was not written by a FantasyTalking training module; "
                               "resume from a checkpoint of examples/finetune.py.")  # fmt: skip
        self._check_compatible(info, source="the checkpoint")

    def _check_compatible(self, info: Mapping[str, Any], *, source: str) -> None:
        config = info.get("config", {})
        mine = self.export_info()
        theirs = info.get("export", {})
        if theirs.get("backbone", {}).get("num_layers") not in (None, mine["backbone"]["num_layers"]):
            raise WeightsError(f"{source} is for a backbone of {theirs['backbone']['num_layers']} blocks, this model "
                               f"has {mine['backbone']['num_layers']}; use the same weights folder.")  # fmt: skip
        if set(theirs.get("conditioners", {})) != set(mine["conditioners"]):
            raise WeightsError(
                f"{source} has conditioners {sorted(theirs.get('conditioners', {}))} besides audio, this model "
                f"{sorted(mine['conditioners'])}; set model face/motion as in the checkpoint's run."
            )
        mode = config.get("trainable", {}).get("mode")
        if mode is not None and mode != self.trainable_config.mode and source == "the checkpoint":
            raise WeightsError(f"{source} was trained with trainable.mode={mode!r}, this run uses "
                               f"{self.trainable_config.mode!r}; resume with the same mode.")  # fmt: skip

    def load_weights(self, path: str | Path, *, ema: bool = False) -> None:
        """Initialise from a training checkpoint (weights only; not the optimiser or the step).

        Every tensor of the checkpoint must fit this model; the model's keys it lacks may only be
        the frozen pretrained weights (kept from the weights folder) and new LoRA adapters (kept at
        their zero start). With ``ema``, the checkpoint's :class:`EMACallback` average is used.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"init checkpoint {path} does not exist; give the stage-one checkpoint (.ckpt).")
        if path.suffix == ".safetensors":
            self._load_export(path)
            return
        checkpoint = read_training_checkpoint(path)
        info = checkpoint["fantasytalking"]
        self._check_compatible(info, source=str(path))
        state = dict(checkpoint["state_dict"])
        if ema:
            state.update(ema_weights(checkpoint, path))
        own = self.state_dict()
        unexpected = sorted(k for k in state if k not in own)
        missing = sorted(k for k in own if k not in state and k not in self._omitted_keys and ".lora_" not in k)
        misshaped = sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
        problem = (unexpected and f"unexpected {unexpected[0]}") or (missing and f"missing {missing[0]}") or (
            misshaped and f"{misshaped[0]} has shape {tuple(state[misshaped[0]].shape)}, "
            f"the model {tuple(own[misshaped[0]].shape)}")  # fmt: skip
        if problem:
            raise WeightsError(f"{path} does not fit this model ({problem}); use the same model settings "
                               "(face, motion, sizes) as the run that wrote it.")  # fmt: skip
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)
        # Pretrained weights the init checkpoint changed (a fully fine-tuned backbone) are no longer the
        # weights folder's: keep them in this run's checkpoints.
        self._omitted_keys = self._omitted_keys - set(state)


    def _load_export(self, path: Path) -> None:
        """Initialise from an inference export (``conditioning.safetensors``, e.g. the shipped demo model):
        strict, into this module's own conditioners; the stage keeps its own audio alignment mode."""
        from fantasytalking.training.export import load_into_pipeline

        mode = self.audio_conditioner.mode
        try:
            config = load_into_pipeline(self.pipe, path)
        finally:
            self.audio_conditioner.mode = mode
        if "face" in self.conditioning and "face" not in config.get("conditioners", {}):
            # an export trained without a face path (the paper's ablation) under a model with one: the face
            # conditioner and its zero branches start fresh, as in a first fit (face.standardize then applies)
            self._face_from_init = False
            log.info("init_from %s has no face conditioner: the face path starts fresh (its branches at zero)", path)
        if config.get("backbone", {}).get("full"):  # a fully trained backbone: keep it in this run's checkpoints
            self._omitted_keys = frozenset(k for k in self._omitted_keys if not k.startswith("transformer."))


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint written by a FantasyTalking training module (tensors and plain data only:
    ``weights_only`` loading; paths in the hyper-parameters are allowed)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = " ".join(str(err).split())[:200]
        raise WeightsError(f"cannot read checkpoint {path} ({type(err).__name__}: {reason}); is it a .ckpt "
                           "written by examples/finetune.py?") from None  # fmt: skip
    if not isinstance(checkpoint, dict) or "fantasytalking" not in checkpoint:
        raise WeightsError(f"{path} is not a FantasyTalking training checkpoint; give a .ckpt of finetune.py.")
    return checkpoint


def ema_weights(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The EMA average stored by :class:`EMACallback` in a Lightning checkpoint."""
    for key, value in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("EMACallback") and "shadow" in value:
            return dict(value["shadow"])
    raise WeightsError(f"{path} holds no EMA weights; train with the EMACallback or leave out the EMA option.")


def _accept_omitted_pretrained(module: nn.Module, incompatible: Any) -> None:
    """Load post-hook: frozen pretrained weights are absent from our checkpoints by design (they come
    from the weights folder); every other missing key still fails the strict load."""
    omitted = getattr(module, "_omitted_keys", frozenset())
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if _clean_key(k) not in omitted]


def _kept(condition: Condition) -> torch.Tensor:
    """``(B,)`` bool: whether each sample kept a token condition after dropout (branch scale not 0)."""
    scale = condition.scale
    batch = condition.tokens.shape[0] if condition.tokens is not None else 1
    if isinstance(scale, torch.Tensor):
        return scale.detach().cpu() != 0
    return torch.full((batch,), float(scale) != 0)


class _LRSchedule:
    """Linear warm-up, then constant, cosine or linear decay to ``min_lr_ratio`` (a picklable callable)."""

    def __init__(self, kind: str, warmup: int, total: int, min_ratio: float) -> None:
        self.kind, self.warmup, self.total, self.min_ratio = kind, warmup, max(total, 1), min_ratio

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1 - progress
        return self.min_ratio + (1 - self.min_ratio) * shape


class StageOneClipAligner(FantasyTalkingModule):
    """Stage one: clip-level audio attention (every visual token attends to the whole clip's audio)."""

    stage = "stage1"
    audio_mode = "clip"


class StageTwoLipRefiner(FantasyTalkingModule):
    """Stage two: frame-level audio windows plus the lip-tracing mask loss; starts from a stage-one checkpoint.

    The loss of a sample is ``L_c = M * L`` (the mean squared error over the lip region ``M``, the
    pixel-space lip mask brought to the latent grid by trilinear interpolation) when ``p > eta``
    (``p ~ U(0, 1)`` per sample), else the plain ``L``: with ``eta = 0.2`` the lip loss is taken
    for 80% of the samples. A sample whose mask is empty on the latent grid uses the plain loss
    (counted in ``train/empty_lip_masks``).

    Args:
        lip_mask_eta: ``eta`` (0.2 in the paper).
        **kwargs: those of :class:`FantasyTalkingModule`.
    """

    stage = "stage2"
    audio_mode = "frame"

    def __init__(self, *args: Any, lip_mask_eta: float = 0.2, **kwargs: Any) -> None:
        if not 0.0 <= lip_mask_eta <= 1.0:
            raise InputError(f"lip_mask_eta must be in [0, 1], got {lip_mask_eta}.")
        super().__init__(*args, **kwargs)
        self.lip_mask_eta = lip_mask_eta
        self.hparams["lip_mask_eta"] = lip_mask_eta

    def resolved_config(self) -> dict[str, Any]:
        return {**super().resolved_config(), "lip_mask_eta": self.lip_mask_eta}

    def lip_mask_branch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(B,)`` bool: True where the lip loss is taken (``p > eta``, ``p ~ U(0, 1)``)."""
        return torch.rand(batch_size, generator=generator) > self.lip_mask_eta

    def reduce_loss(
        self, error: torch.Tensor, batch: Mapping[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "lip_mask" not in batch:
            raise InputError("stage two needs 'lip_mask' in the batch (B, 1, N, H, W); preprocess with lip masks.")
        plain = error.flatten(1).mean(dim=1)  # (B,)
        mask = latent_lip_mask(batch["lip_mask"].to(error.device), tuple(error.shape[2:]))  # (B, 1, F, h, w)
        nonempty = mask.flatten(1).sum(dim=1) > 0  # (B,)
        take = self.lip_mask_branch(error.shape[0], generator).to(error.device) & nonempty  # (B,)
        lip = masked_mean(error, mask)  # (B,)
        logs = {
            "lip_loss_fraction": take.float().mean(),
            "empty_lip_masks": (~nonempty).float().sum(),
        }
        return torch.where(take, lip, plain), logs
