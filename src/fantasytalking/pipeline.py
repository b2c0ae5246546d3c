"""Inference: one portrait + one speech track -> a talking video (FANTASYTALKING.md 3.6-3.8).

:class:`FantasyTalkingPipeline` is a diffusers ``DiffusionPipeline`` (so ``.to()``,
``enable_model_cpu_offload()`` and progress bars work as diffusers users expect) holding the
FantasyTalking transformer, the conditioning stack, Wan's VAE, umT5 and CLIP.

Example::

    pipe = FantasyTalkingPipeline.from_pretrained("weights/", device="cuda:0", dtype=torch.bfloat16)
    result = pipe("portrait.png", "speech.wav", prompt="A woman is talking.")
    pipe.save(result, "out.mp4")  # H.264 + AAC, and out.json with every setting
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from fantasytalking import io as ftio
from fantasytalking.conditioning import AudioConditioner, ConditioningStack, num_latent_frames
from fantasytalking.errors import InputError, non_negative
from fantasytalking.models import BranchInput, FantasyTalkingTransformer
from fantasytalking.sampling import GuidanceConfig, flow_match_sigmas, guided_model_fn, sample_euler

logger = logging.getLogger(__name__)

#: Wan2.1's standard negative prompt (its ``sample_neg_prompt``), the release's default.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_PROMPT = "A person is talking."


@dataclass
class GenerationSettings:
    """Every resolved setting of one generation (written to the JSON sidecar)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    num_inference_steps: int = 30
    max_edge: int = 512
    fps: int = 23
    max_frames: int = 81
    prompt_cfg: float = 5.0
    audio_cfg: float = 5.0
    audio_scale: float = 1.0
    audio_guidance_steps: tuple[int, int] | None = None
    shift: float = 5.0
    seed: int = 1111
    face_motion: float | None = None  # motion intensities (paper: 0.1 subtle, 0.5 natural, 1.0 intense)
    body_motion: float | None = None
    motion_gain: float = 1.0  # inference-time strength of the requested motion (1: as trained; docs/design.md)
    face_scale: float | None = None  # weight of the face branch (None: the conditioner's own, l2 = 0.5 in the paper;
    # recorded as the weight used when the weights have a face conditioner)
    pin_first_frame: bool = False  # hold latent frame 0 on the portrait's latent, noised to each step (our addition)
    # resolved from the inputs
    width: int = 0
    height: int = 0
    num_frames: int = 0
    audio_seconds_used: float = 0.0
    audio_seconds_given: float = 0.0
    segment_frames: int | None = None  # set when the video was made of several clips
    segments: int = 1
    face_image: str | None = None  # where the face conditioner's portrait came from, when not the image
    notes: list[str] = field(default_factory=list)


@dataclass
class FantasyTalkingOutput:
    """A generated clip.

    Attributes:
        frames: ``uint8 (F, H, W, 3)`` video frames.
        audio: ``float32 (T,)`` the speech used (16 kHz mono, cut to the clip).
        sample_rate: of ``audio``.
        fps: video frame rate.
        settings: every resolved setting.
    """

    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: int
    settings: GenerationSettings


class FantasyTalkingPipeline(DiffusionPipeline):
    """Image + speech (+ prompt) -> talking video, with the release's defaults.

    Args:
        transformer: :class:`~fantasytalking.models.FantasyTalkingTransformer`.
        conditioning: a :class:`~fantasytalking.conditioning.ConditioningStack` with an ``audio``
            conditioner that has its speech encoder.
        vae: diffusers ``AutoencoderKLWan``.
        text_encoder: transformers ``UMT5EncoderModel``; tokenizer: its tokenizer.
        image_encoder: transformers ``CLIPVisionModel``; image_processor: its ``CLIPImageProcessor``
            (only its normalisation is used: the image is resized to the encoder's input size as Wan does).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->conditioning->transformer->vae"

    def __init__(
        self,
        transformer: FantasyTalkingTransformer,
        conditioning: ConditioningStack,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        image_encoder: Any,
        image_processor: Any,
    ) -> None:
        super().__init__()
        if "audio" not in conditioning:
            raise ValueError("the conditioning stack needs an 'audio' conditioner")
        self.register_modules(
            transformer=transformer,
            conditioning=conditioning,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            image_encoder=image_encoder,
            image_processor=image_processor,
        )
        # Wan VAE: 2x per down stage in space, 2x per temporal down stage in time (8 and 4 for Wan2.1).
        self.vae_scale_factor_spatial = 2 ** len(vae.config.temperal_downsample)
        self.vae_scale_factor_temporal = 2 ** sum(vae.config.temperal_downsample)
        stride = getattr(conditioning["audio"], "temporal_stride", self.vae_scale_factor_temporal)
        if stride != self.vae_scale_factor_temporal:
            raise ValueError(f"the audio conditioner makes windows for {stride} video frames per latent frame, the VAE "
                             f"packs {self.vae_scale_factor_temporal}; build it with temporal_stride="
                             f"{self.vae_scale_factor_temporal}.")  # fmt: skip
        self.source_files: list[str] = []  # weight files used (recorded in the sidecar)
        #: Default clip length of segmented generation (None: one clip, as the release); weights trained on
        #: short clips (the demo: 17 frames) set it so long speech is made of clips of the trained length.
        self.segment_frames: int | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        weights: str | Path | None = None,
        *,
        wan: str | Path | None = None,
        wav2vec: str | Path | None = None,
        fantasytalking: str | Path | None = None,
        conditioning: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        local_files_only: bool = True,
    ) -> FantasyTalkingPipeline:
        """Load the official weights: one folder holding all three, or explicit paths, or hub names.

        Args:
            weights: a folder with ``Wan2.1-I2V-14B-720P`` (original or ``-Diffusers`` layout),
                ``wav2vec2-base-960h`` and ``fantasytalking_model.ckpt`` (see docs/weights.md).
            wan: explicit path or hub name of the Wan model, overriding ``weights``.
            wav2vec: explicit path or hub name of wav2vec2, overriding ``weights``.
            fantasytalking: explicit path or hub name of ``fantasytalking_model.ckpt``, overriding ``weights``.
            conditioning: trained conditioning weights exported by ``examples/finetune.py`` (audio,
                and face / motion / LoRA when trained with them), loaded over the release's audio weights.
            device: where the models go.
            dtype: their dtype (``torch.bfloat16`` on a GPU).
            local_files_only: False lets hub names download (needs a network).
        """
        from fantasytalking.loading import build_pipeline_components, resolve_weights

        paths = resolve_weights(
            weights, wan=wan, wav2vec=wav2vec, fantasytalking=fantasytalking, local_files_only=local_files_only
        )
        pipe = cls(**build_pipeline_components(paths, device=device, dtype=dtype))
        pipe.source_files = [str(p) for p in paths.files]
        if conditioning is not None:
            from fantasytalking.training.export import load_into_pipeline

            load_into_pipeline(pipe, conditioning)
            pipe.source_files.append(str(conditioning))
        return pipe

    # ------------------------------------------------------------------ encoders

    @property
    def text_len(self) -> int:
        return self.transformer.text_len

    @property
    def audio_conditioner(self) -> AudioConditioner:
        return self.conditioning["audio"]  # type: ignore[return-value]

    def encode_prompt(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """umT5 embeddings, each trimmed to its length and zero-padded to ``text_len``: ``(B, text_len, text_dim)``."""
        # diffusers' Wan text encoding (ftfy + whitespace clean, pad to max length, zero the padding).
        return WanImageToVideoPipeline._get_t5_prompt_embeds(
            self, prompts, max_sequence_length=self.text_len, device=device, dtype=dtype
        )

    def encode_image(self, image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """CLIP penultimate-layer tokens of images in ``[-1, 1]`` ``(B, 3, H, W)`` -> ``(B, S_img, image_dim)``.

        As Wan does: bicubic resize straight to the encoder's square input (no centre crop), then
        the CLIP normalisation.
        """
        size = self.image_encoder.config.image_size
        pixels = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.image_processor.image_mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_processor.image_std, device=pixels.device).view(1, 3, 1, 1)  # CLIP's
        pixels = ((pixels * 0.5 + 0.5) - mean) / std
        encoder_device = next(self.image_encoder.parameters()).device
        out = self.image_encoder(
            pixel_values=pixels.to(encoder_device, self.image_encoder.dtype), output_hidden_states=True
        )
        return out.hidden_states[-2].to(device=device, dtype=dtype)  # penultimate layer

    def _latents_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        z_dim = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, device=device).view(1, z_dim, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=device).view(1, z_dim, 1, 1, 1)
        return mean, std

    def encode_condition(self, image: torch.Tensor, num_frames: int, device: torch.device) -> torch.Tensor:
        """The I2V condition ``y = [mask (4 ch), VAE([image, zeros...]) (16 ch)]``.

        Args:
            image: ``(B, 3, H, W)`` reference images in ``[-1, 1]``.
            num_frames: video frames ``N`` of the clip.

        Returns:
            ``(B, 4 + z, F, h, w)``.
        """
        batch, _, height, width = image.shape
        vae_device = next(self.vae.parameters()).device
        video = torch.cat([image[:, :, None], image.new_zeros(batch, 3, num_frames - 1, height, width)], dim=2)
        latent = self.vae.encode(video.to(vae_device, self.vae.dtype)).latent_dist.mode().float()  # (B, z, F, h, w)
        mean, std = self._latents_stats(latent.device)
        latent = ((latent - mean) / std).to(device)
        frames = latent.shape[2]
        # The first video frame is given: mask 1 on latent frame 0 (all its video frames: 4 for Wan), 0 elsewhere.
        mask = latent.new_zeros(batch, self.vae_scale_factor_temporal, frames, *latent.shape[-2:])
        mask[:, :, 0] = 1
        return torch.cat([mask, latent], dim=1)

    def encode_video(self, video: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """Normalised VAE latents of videos ``(B, 3, N, H, W)`` in ``[-1, 1]`` -> ``(B, z, F, h, w)`` (fp32)."""
        vae_device = next(self.vae.parameters()).device
        dist = self.vae.encode(video.to(vae_device, self.vae.dtype)).latent_dist
        latent = (dist.sample(generator) if sample else dist.mode()).float()
        mean, std = self._latents_stats(latent.device)
        return (latent - mean) / std

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents ``(1, z, F, h, w)`` -> ``uint8 (N, H, W, 3)`` frames."""
        vae_device = next(self.vae.parameters()).device
        mean, std = self._latents_stats(vae_device)
        latents = latents.to(vae_device).float() * std + mean
        video = self.vae.decode(latents.to(self.vae.dtype)).sample  # (1, 3, N, H, W) in [-1, 1]
        video = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(1, 2, 3, 0).cpu().numpy()  # (N, H, W, 3)

    # ------------------------------------------------------------------ generation

    @property
    def min_image_side(self) -> int:
        """Smallest shorter side (px) of an input image: 4 latent patches (VAE stride x patch size, 4 x 16 = 64 for
        Wan), below which the resized portrait leaves too few tokens for a face."""
        return 4 * self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    def prepare_inputs(
        self, image: Any, audio: Any, settings: GenerationSettings
    ) -> tuple[torch.Tensor, np.ndarray, GenerationSettings, Any]:
        """Check and prepare the image and audio; fills the resolved fields of ``settings``.

        Returns the model image ``(1, 3, H, W)`` in ``[-1, 1]``, the speech used, the settings and
        the RGB input image (for the face conditioner).
        """
        spatial = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
        pil = ftio.as_image(image)
        ftio.check_image_size(pil, min_side=self.min_image_side)
        resized = ftio.resize_for_model(pil, max_edge=settings.max_edge, multiple=spatial)
        settings.width, settings.height = resized.size
        image_tensor = ftio.image_to_tensor(resized)[None]  # (1, 3, H, W) in [-1, 1]

        sample_rate = self.audio_conditioner.sample_rate
        if isinstance(audio, np.ndarray):
            waveform = audio.astype(np.float32)
        else:
            waveform, _ = ftio.load_audio(audio, target_sr=sample_rate)
        duration = len(waveform) / sample_rate
        if duration <= 0:
            raise InputError("the audio is empty; give a speech file with sound.")
        settings.num_frames = ftio.clip_frames(duration, fps=settings.fps, max_frames=settings.max_frames)
        used = waveform[: int(ftio.clip_seconds(settings.num_frames, settings.fps) * sample_rate)]  # [0, N / fps]
        settings.audio_seconds_given = round(duration, 3)
        settings.audio_seconds_used = round(len(used) / sample_rate, 3)
        note = ftio.audio_overflow_warning(duration, settings.num_frames, settings.fps)
        if note:
            settings.notes.append(note)
            logger.warning(note)
        return image_tensor, used, settings, pil

    def face_source(self, face_image: Any) -> Any:
        """The RGB PIL image of ``face_image`` (a path or a PIL image) for the face conditioner, checked as an input
        image is; an error when these weights have no face conditioner to give it to."""
        if "face" not in self.conditioning:
            raise InputError("these weights have no face conditioner (the public release has only audio); "
                             "drop face_image / --face-image or use weights trained with the face branch.")  # fmt: skip
        pil = ftio.as_image(face_image)
        ftio.check_image_size(pil, min_side=self.min_image_side,
                              path=face_image if isinstance(face_image, (str, Path)) else "face_image")  # fmt: skip
        return pil

    def identity_and_motion_inputs(self, image: Any, settings: GenerationSettings) -> dict[str, dict[str, Any]]:
        """Inputs of the face and motion conditioners, when the weights have them.

        The face is found in the input image (dlib, offline) and embedded with the face conditioner's
        encoder; the motion intensities default to the conditioner's (0.5, 0.5).
        """
        inputs: dict[str, dict[str, Any]] = {}
        if "face" in self.conditioning:
            from fantasytalking.face import detect_face_landmarks

            rgb = np.asarray(image.convert("RGB"))
            _, landmarks = detect_face_landmarks(rgb)  # NoFaceError (an InputError) when there is none
            inputs["face"] = {"features": self.conditioning["face"].embed(rgb, landmarks)}
            if settings.face_scale is None:  # the weight used, as recorded: the conditioner's own
                settings.face_scale = float(self.conditioning["face"].scale)
        wanted = (settings.face_motion, settings.body_motion)
        if "motion" in self.conditioning:
            motion = self.conditioning["motion"]
            default = [float(v) for v in motion.default]
            values = [default[i] if v is None else float(v) for i, v in enumerate(wanted)]
            if not all(0.0 <= v <= 1.0 for v in values):
                raise InputError(f"motion intensities must be in [0, 1], got face {values[0]} and body {values[1]}.")
            gain = float(settings.motion_gain)  # checked in __call__
            settings.face_motion, settings.body_motion = values  # the requests, as recorded
            inputs["motion"] = {"intensities": motion.labels(torch.tensor([values])), "gain": gain}  # (1, 2) labels
        elif any(v is not None for v in wanted) or settings.motion_gain != 1.0:
            raise InputError(
                "these weights have no motion conditioner (the public release has only audio); "
                "drop --face-motion/--body-motion/--motion-gain or use weights trained with motion."
            )
        return inputs

    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        audio: Any,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = WAN_NEGATIVE_PROMPT,
        *,
        num_inference_steps: int = 30,
        max_edge: int = 512,
        fps: int = 23,
        max_frames: int = 81,
        prompt_cfg: float = 5.0,
        audio_cfg: float = 5.0,
        audio_scale: float = 1.0,
        audio_guidance_steps: tuple[int, int] | None = None,
        shift: float = 5.0,
        seed: int = 1111,
        face_motion: float | None = None,
        body_motion: float | None = None,
        motion_gain: float = 1.0,
        face_scale: float | None = None,
        pin_first_frame: bool = False,
        batch_passes: bool = False,
        segment_frames: int | None = None,
        face_image: Any = None,
        progress: bool = True,
    ) -> FantasyTalkingOutput:
        """Generate a talking clip.

        Args:
            image: a path, a PIL image (any mode; converted to RGB) or a ``uint8 (H, W, 3)`` RGB array (e.g. the
                last frame of an earlier output, to continue it).
            audio: a path (any format and sample rate) or a 16 kHz mono ``float32`` array.
            prompt, negative_prompt: text condition; the negative prompt is the unconditional pass.
            num_inference_steps: Euler steps (30 in the release).
            max_edge: longest image edge; sides are rounded up to multiples of 16.
            fps: video frame rate (the weights were trained at 23).
            max_frames: cap on ``num_frames = min(int(fps * duration // 4) * 4 + 5, max_frames)``.
            prompt_cfg, audio_cfg: dual guidance scales (the paper uses 4.5 for both).
            audio_scale: weight of the audio attention (0 switches the audio off).
            audio_guidance_steps: ``(first, last)`` steps with separate audio guidance, or None for all.
            shift: flow-matching shift of the schedule.
            seed: the initial noise is drawn in fp32 on the CPU from this seed.
            face_motion, body_motion: requested motion intensities in ``[0, 1]`` (default 0.5 each);
                only for weights with a motion conditioner. With the model's request scale a request is a
                quantile of its training clips' motion (0.5: the median clip); without one, the label itself
                (docs/design.md).
            motion_gain: strength of the requested motion, ``e(d) + gain * (e(m) - e(d))`` on the motion
                embedding, ``d`` the default intensities (our addition; 1: as trained; ``d`` itself is unchanged).
            face_scale: weight of the face (identity) branch in every block, the paper's ``l2``; None: the face
                conditioner's own (0.5 as trained), 0 switches the branch off. Only for weights with a face
                conditioner.
            pin_first_frame: after every Euler step, set latent frame 0 to the portrait's latent noised to the
                next step's level, ``(1 - sigma) * z0 + sigma * noise0`` (the noise it started from), so the
                clip ends on the portrait's exact latent. Our addition (off in the release, which gives the
                portrait only through the condition ``y``); docs/design.md.
            batch_passes: run a step's guidance passes as one batch (fewer, larger kernels; more
                activation memory). Same result up to floating-point rounding.
            segment_frames: generate longer speech as consecutive clips of this many frames (4k+1), each
                starting from the previous clip's last frame, up to ``max_frames`` in all; 0: one clip
                (the release). None: the weights' own setting (``pipe.segment_frames``: none for the
                official weights, the training clip length for the demo).
            face_image: the portrait the face conditioner embeds (as ``image`` is given), when it is not
                ``image``: e.g. ``image`` is the last frame of an earlier clip (a continuation, whose colours and
                sharpness have drifted) and ``face_image`` the original portrait, so that the identity tokens
                come from the original, as segmented generation does. None: ``image``. Only for weights with a
                face conditioner.
        """
        settings = GenerationSettings(
            prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
            max_edge=max_edge, fps=fps, max_frames=max_frames, prompt_cfg=prompt_cfg, audio_cfg=audio_cfg,
            audio_scale=audio_scale, audio_guidance_steps=audio_guidance_steps, shift=shift, seed=seed,
            face_motion=face_motion, body_motion=body_motion, motion_gain=motion_gain, face_scale=face_scale,
            pin_first_frame=bool(pin_first_frame),
        )
        if face_scale is not None:
            if "face" not in self.conditioning:
                raise InputError("these weights have no face conditioner (the public release has only audio); "
                                 "drop face_scale / --face-scale or use weights trained with the face branch.")  # fmt: skip
            non_negative(face_scale, "face scale", "0: the face branch off")
        non_negative(motion_gain, "motion gain", "1: as trained")
        if audio_guidance_steps is not None:
            first, last = audio_guidance_steps
            if not 0 <= first <= last < num_inference_steps:
                raise InputError(
                    f"audio guidance steps {first}-{last} are outside 0-{num_inference_steps - 1}; give FIRST <= LAST."
                )
        image_tensor, waveform, settings, pil = self.prepare_inputs(image, audio, settings)
        if face_image is None:
            identity_motion = self.identity_and_motion_inputs(pil, settings)
        else:
            from fantasytalking.face.landmarks import NoFaceError

            settings.face_image = str(face_image) if isinstance(face_image, (str, Path)) else "an image object"
            try:
                identity_motion = self.identity_and_motion_inputs(self.face_source(face_image), settings)
            except NoFaceError:
                raise NoFaceError(f"no face found in face_image ({settings.face_image}); give the original portrait, "
                                  "with one clearly visible face") from None  # fmt: skip
        device = self._execution_device
        self.set_progress_bar_config(disable=not progress)
        segment = self.resolve_segment_frames(segment_frames)
        text = self.encode_prompt([prompt, negative_prompt], device, self.transformer.transformer.dtype)  # (2, L, D)
        if segment is None or settings.num_frames <= segment:
            frames = self.sample_clip(image_tensor, waveform, settings.num_frames, identity_motion, text, settings,
                                      seed=seed, batch_passes=batch_passes, device=device)  # fmt: skip
        else:
            # Segments of `segment` frames; each starts from the previous one's last frame (pixels), so
            # the video is continuous; identity and motion inputs come from the reference every time.
            stride = segment - 1
            count = math.ceil((settings.num_frames - 1) / stride)
            settings.segment_frames = segment
            settings.segments = count
            sample_rate = self.audio_conditioner.sample_rate
            pieces: list[np.ndarray] = []
            first = image_tensor
            for k in range(count):
                start = k * stride  # first video frame of the segment
                a0 = round(start / settings.fps * sample_rate)
                a1 = round((start + segment) / settings.fps * sample_rate)
                piece = waveform[a0:a1]
                if len(piece) < a1 - a0:  # past the end of the speech: silence
                    piece = np.pad(piece, (0, a1 - a0 - len(piece)))
                clip = self.sample_clip(first, piece, segment, identity_motion, text, settings, seed=seed + k,
                                        batch_passes=batch_passes, device=device)  # fmt: skip
                pieces.append(clip if k == 0 else clip[1:])
                first = torch.from_numpy(clip[-1]).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # (1, 3, H, W)
            frames = np.concatenate(pieces)[: settings.num_frames]
        self.maybe_free_model_hooks()
        return FantasyTalkingOutput(
            frames=frames, audio=waveform, sample_rate=self.audio_conditioner.sample_rate, fps=fps, settings=settings
        )

    def resolve_segment_frames(self, segment_frames: int | None) -> int | None:
        """The segment length to use: the argument (0: none), else the weights' own (``self.segment_frames``)."""
        value = self.segment_frames if segment_frames is None else segment_frames
        if not value:
            return None
        # 4k+1 for every Wan VAE, the demo's without temporal compression too: diffusers' AutoencoderKLWan encodes a
        # first frame, then 4 frames at a time, and drops the frames of an unfinished group of 4
        multiple = math.lcm(4, self.vae_scale_factor_temporal)
        if value < 5 or (value - 1) % multiple:
            raise InputError(
                f"segment_frames must be {multiple}k+1 (the Wan VAE encodes a first frame, then 4 at a time) and at "
                f"least 5, got {value}; "
                "use the length the weights were trained on (17 for the demo), or 0 for one clip."
            )
        return int(value)

    def sample_clip(
        self,
        image_tensor: torch.Tensor,
        waveform: np.ndarray,
        num_frames: int,
        identity_motion: dict[str, dict[str, Any]],
        text: torch.Tensor,
        settings: GenerationSettings,
        *,
        seed: int,
        batch_passes: bool,
        device: torch.device,
    ) -> np.ndarray:
        """One clip of ``num_frames`` frames from a first frame ``(1, 3, H, W)`` in ``[-1, 1]`` and its speech
        (``num_frames / fps`` seconds, 16 kHz) and the encoded ``[prompt, negative prompt]`` ``(2, L, D)``: the
        dual-guidance Euler sampler -> ``uint8 (N, H, W, 3)``."""
        dtype = self.transformer.transformer.dtype
        inputs: dict[str, dict[str, Any]] = {"audio": {"waveform": waveform, "num_frames": num_frames}}
        inputs.update(identity_motion)

        # Conditions shared by every pass: image latents + CLIP tokens.
        y = self.encode_condition(image_tensor.to(device), num_frames, device).to(dtype)  # (1, 20, F, h, w)
        image_embeds = self.encode_image(image_tensor.to(device), device, dtype)  # (1, S_img, image_dim)
        text_pos, text_neg = text[:1], text[1:]

        conditions = self.conditioning(inputs)
        conditions["audio"] = conditions["audio"].with_scale(settings.audio_scale)
        if settings.face_scale is not None:  # checked in __call__: only with a face conditioner
            conditions["face"] = conditions["face"].with_scale(float(settings.face_scale))
        cond_branches, cond_time = self.conditioning.to_backbone(conditions)
        null_branches, null_time = self.conditioning.to_backbone(self.conditioning.null(conditions, ["audio"]))
        uncond_branches, uncond_time = self.conditioning.to_backbone(self.conditioning.null(conditions))

        passes = {
            "full": (text_pos, cond_branches, cond_time),
            "no_audio": (text_pos, null_branches, null_time),
            "uncond": (text_neg, uncond_branches, uncond_time),
        }

        def predict(latents: torch.Tensor, timestep: torch.Tensor, name: str) -> torch.Tensor:
            text_embeds, branches, time_embedding = passes[name]
            model_input = torch.cat([latents.to(dtype), y], dim=1)  # (1, 16 + 20, F, h, w)
            # The release feeds the timestep in the model dtype; do the same so bf16 runs match it.
            return self.transformer(
                model_input, timestep.to(dtype), text_embeds, image_embeds,
                branches=branches, time_embedding=time_embedding,
            )

        def predict_batched(latents: torch.Tensor, timestep: torch.Tensor, names: tuple[str, ...]) -> dict:
            text_embeds, branches, time_embedding = merge_passes([passes[n] for n in names])
            count = len(names)
            model_input = torch.cat([latents.to(dtype), y], dim=1).expand(count, -1, -1, -1, -1)  # (P, 36, F, h, w)
            out = self.transformer(
                model_input, timestep.to(dtype).expand(count), text_embeds, image_embeds.expand(count, -1, -1),
                branches=branches, time_embedding=time_embedding,
            )  # (P, 16, F, h, w)
            return {name: out[i : i + 1] for i, name in enumerate(names)}

        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (
            1,
            self.vae.config.z_dim,
            num_latent_frames(num_frames, self.vae_scale_factor_temporal),
            settings.height // self.vae_scale_factor_spatial,
            settings.width // self.vae_scale_factor_spatial,
        )
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

        guidance = GuidanceConfig(prompt_cfg=settings.prompt_cfg, audio_cfg=settings.audio_cfg,
                                  audio_steps=settings.audio_guidance_steps)  # fmt: skip
        sigmas = flow_match_sigmas(settings.num_inference_steps, settings.shift)
        z0, noise0 = y[:, -noise.shape[1] :, :1].float(), noise[:, :, :1].clone()  # (1, z, 1, h, w): frame 0

        with self.progress_bar(total=settings.num_inference_steps) as bar:
            model_fn = (guided_model_fn(None, guidance, predict_batched=predict_batched) if batch_passes
                        else guided_model_fn(predict, guidance))  # fmt: skip

            def after_step(step: int, latents: torch.Tensor) -> None:
                if settings.pin_first_frame:  # in place: frame 0 on its flow-matching path at the new level
                    sigma = float(sigmas[step + 1])
                    latents[:, :, :1] = ((1.0 - sigma) * z0 + sigma * noise0).to(latents.dtype)
                bar.update()

            latents = sample_euler(model_fn, noise, sigmas, callback=after_step)
        return self.decode(latents)

    # ------------------------------------------------------------------ output

    def save(self, output: FantasyTalkingOutput, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``path`` (H.264 + AAC mp4, audio trimmed to the video) and its JSON sidecar, atomically: both
        appear or neither; a failure leaves existing files as they were. Without ``overwrite`` an existing video
        or sidecar is an error."""
        path = Path(path)
        ftio.check_outputs(path, overwrite=overwrite)
        record = {
            "video": path.name,
            "settings": asdict(output.settings),
            "frames": int(output.frames.shape[0]),
            "fps": output.fps,
            "duration_s": round(output.frames.shape[0] / output.fps, 4),
            "weights": self.source_files,
            "model": {
                "transformer_layers": self.transformer.num_layers,
                "inner_dim": self.transformer.inner_dim,
                "audio_mode": self.audio_conditioner.mode,
                "dtype": str(self.transformer.transformer.dtype).removeprefix("torch."),
            },
        }
        ftio.write_video_with_sidecar(path, output.frames, output.fps, record, audio=output.audio,
                                      sample_rate=output.sample_rate, overwrite=overwrite)  # fmt: skip
        return path




def merge_passes(
    passes: list[tuple[torch.Tensor, dict[str, BranchInput], torch.Tensor | None]],
) -> tuple[torch.Tensor, dict[str, BranchInput], torch.Tensor | None]:
    """Stack guidance passes (each batch 1) into one batch: text, branches and time embeddings.

    A branch that is off in a pass (absent or scale 0) gets that pass's row with scale 0, which
    contributes exactly nothing; key lengths are shared (every pass uses the same clip).
    """
    text = torch.cat([text for text, _, _ in passes])  # (P, text_len, text_dim)
    branches: dict[str, BranchInput] = {}
    names = {name for _, pass_branches, _ in passes for name in pass_branches}
    for name in sorted(names):
        reference = next(b[name] for _, b, _ in passes if name in b)
        tokens, scales = [], []
        for _, pass_branches, _ in passes:
            branch = pass_branches.get(name)
            tokens.append(reference.tokens if branch is None else branch.tokens)
            scale = 0.0 if branch is None else branch.scale
            scales.append(scale.reshape(-1) if isinstance(scale, torch.Tensor) else torch.tensor([float(scale)]))
        device = reference.tokens.device
        branches[name] = BranchInput(torch.cat(tokens), reference.key_lengths, torch.cat(scales).to(device))
    times = [time for _, _, time in passes]
    time_embedding = None
    if any(t is not None for t in times):
        like = next(t for t in times if t is not None)
        time_embedding = torch.cat([torch.zeros_like(like) if t is None else t for t in times])  # (P, D)
    return text, branches, time_embedding
