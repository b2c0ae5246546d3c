"""The ``demo`` preset: FantasyTalking's classes at a size that trains on a 2-core CPU.

Same classes as the 14B model, smaller:

* backbone: diffusers ``WanTransformer3DModel`` (I2V: 33 input channels, image keys/values), width 256
  (4 heads x 64), 6 blocks, FFN 512, wrapped in :class:`~fantasytalking.models.FantasyTalkingTransformer`
  (audio branch in every block);
* VAE: diffusers ``AutoencoderKLWan`` with Wan's structure (z_dim 16, spatial stride 8, 2 residual blocks a
  stage, Wan2.2's residual resampling) and 16 base channels, ``dim_mult [1, 2, 2, 2]``, WITHOUT temporal
  compression (each frame its own latent frame; docs/design.md says why). Random unless a VAE trained by
  :class:`~fantasytalking.training.vae.WanVAETrainer` (with its latent statistics) is given;
* speech: :class:`~fantasytalking.conditioning.MelSpeechEncoder` (80 log-mel bands at wav2vec2's 50 tokens/s,
  no download) + ``AudioProjModel(80 -> 128)``;
* conditioners: audio, face (dlib 128-d features -> Q-Former identity tokens) and motion (added to the
  timestep embedding);
* text / image encoders: the tiny preset's umT5 (offline character tokenizer) and CLIP vision tower, FROZEN
  and RANDOM. They are random feature extractors here: the demo's prompt is constant (so the text tokens are
  a learned-by-the-backbone constant), and identity comes from the face conditioner and the first-frame
  latents ``y``, not from CLIP semantics.

Parameter counts (fp32; see :func:`demo_parameter_counts`): backbone ~7.7M with its audio branch,
face ~0.5M, motion ~0.1M, VAE 0.83M, umT5 + CLIP ~0.1M: about 9M in all, ~18 MB in fp16/bf16
(~36 MB even in fp32), inside the 50 MB checkpoint budget.

CPU speeds (``/work/shared/CPU-FIGURES.md``, 2 cores): a DiT step of batch 8 at 96 px / 17 frames is about
0.8 s; the VAE encodes of the clip and of the first-frame condition add about as much again per step.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from fantasytalking.conditioning import AudioConditioner, ConditioningStack
from fantasytalking.conditioning.mel import MelFeatureExtractor, MelSpeechEncoder
from fantasytalking.pipeline import FantasyTalkingPipeline
from fantasytalking.training.builder import attach_face, attach_motion
from fantasytalking.training.config import FaceConfig, MotionConfig

__all__ = [
    "DEMO_AUDIO",
    "DEMO_CLIP_FRAMES",
    "DEMO_DIT",
    "DEMO_FACE",
    "DEMO_FPS",
    "DEMO_MOTION",
    "DEMO_TEMPORAL_STRIDE",
    "DEMO_TEXT_LEN",
    "DEMO_VAE",
    "demo_components",
    "demo_parameter_counts",
    "demo_pipeline",
    "demo_vae",
]

#: Wan's VAE structure (z 16, spatial stride 8, 4 stages of 2 residual blocks) with 16 base channels, Wan2.2's
#: residual resampling blocks, and no temporal compression (stride 1x8x8; the 14B's is 4x8x8).
DEMO_VAE: dict[str, Any] = {
    "base_dim": 16,
    "z_dim": 16,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 2,
    "attn_scales": [],
    # No temporal compression: each video frame is its own latent frame (the 14B's VAE packs 4 frames in one).
    # A CPU-trained VAE of this size could not keep a mouth that changes every frame inside a 4-frame latent,
    # and a per-frame VAE trains on single frames (docs/design.md).
    "temperal_downsample": [False, False, False],
    "scale_factor_temporal": 1,
    # Wan2.2's residual down / up blocks (parameter-free space-to-depth / depth-to-space shortcuts around each
    # resampling): from scratch the Wan2.1 blocks stay near the constant output for hundreds of CPU steps
    # (docs/design.md); the shortcuts carry the image through the bottleneck from the first step.
    "is_residual": True,
    # A random (untrained) VAE has no dataset statistics: identity normalisation.
    "latents_mean": [0.0] * 16,
    "latents_std": [1.0] * 16,
}
#: Video frames per latent frame of the demo VAE (the 14B's: 4).
DEMO_TEMPORAL_STRIDE = 2 ** sum(DEMO_VAE["temperal_downsample"])

#: The demo backbone: Wan2.1 I2V's config at width 256 (the 14B: 40 heads x 128, 40 layers, FFN 13824).
DEMO_DIT: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 4,
    "attention_head_dim": 64,  # model width D = 256
    # 16 noisy latent + 1 mask channel per video frame of a latent frame + 16 image latent (the 14B: 16 + 4 + 16)
    "in_channels": 2 * DEMO_VAE["z_dim"] + DEMO_TEMPORAL_STRIDE,
    "out_channels": DEMO_VAE["z_dim"],
    "text_dim": 32,  # = the tiny umT5's d_model
    "freq_dim": 64,
    "ffn_dim": 512,
    "num_layers": 6,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 32,  # = the tiny CLIP's hidden_size
    "added_kv_proj_dim": 256,  # = D
    "rope_max_seq_len": 1024,
}
#: Frame rate the demo is trained and generated at (the release's 23).
DEMO_FPS = 23.0
#: Frames of a demo training clip (4k+1); longer speech is generated in segments of this length.
DEMO_CLIP_FRAMES = 17


def _window_length(fps: float, num_frames: int) -> int:
    """Tokens of a frame-level audio window for clips of ``num_frames`` at ``fps`` (wav2vec2's token rate)."""
    from fantasytalking.conditioning.windows import frame_windows

    samples = int(num_frames / fps * MelFeatureExtractor().sampling_rate)
    tokens = MelSpeechEncoder().num_tokens(samples)
    return frame_windows(tokens, num_frames, temporal_stride=DEMO_TEMPORAL_STRIDE).window_length


#: Speech: 80 log-mel bands -> audio tokens of width 128 (the release: 768 -> 2048), and an offset-in-window
#: embedding as long as a window at the demo's frame rate (11 tokens at 23 fps and temporal stride 1): log-mel
#: frames carry no context, unlike wav2vec2's, so without it a frame's window is an unordered set of tokens
#: (docs/design.md).
DEMO_AUDIO: dict[str, int] = {"audio_in_dim": 80, "proj_dim": 128,
                              "window_positions": _window_length(DEMO_FPS, DEMO_CLIP_FRAMES)}  # fmt: skip
#: Padded prompt length (umT5: 512). The demo prompt is one short sentence (character tokens).
DEMO_TEXT_LEN = 64
#: The identity branch of the demo (dlib's 128-d embedding -> 8 tokens of width 128).
DEMO_FACE: dict[str, Any] = {"face_dim": 128, "dim": 128, "num_queries": 8, "num_layers": 2, "num_heads": 4,
                             "ff_mult": 4}  # fmt: skip
#: The motion-intensity network of the demo (its output width is the backbone's, 256).
DEMO_MOTION: dict[str, Any] = {"hidden_dim": 128, "num_frequencies": 8}


def demo_vae(vae_path: str | Path | None = None, *, seed: int = 0) -> Any:
    """The demo's ``AutoencoderKLWan``: loaded from ``vae_path`` (``WanVAETrainer.export_vae``), else random."""
    from diffusers import AutoencoderKLWan

    if vae_path is not None:
        vae = AutoencoderKLWan.from_pretrained(str(vae_path), torch_dtype=torch.float32)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            vae = AutoencoderKLWan(**DEMO_VAE)
    return vae.requires_grad_(False).eval()


def demo_components(vae_path: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """The pipeline's components (audio conditioner only; see :func:`demo_pipeline`), float32 on the CPU.

    Every random weight comes from ``seed`` (the global RNG is left untouched).
    """
    from diffusers import WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from fantasytalking.loading.hf import quiet_transformers
    from fantasytalking.loading.image_encoder import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from fantasytalking.models import FantasyTalkingTransformer
    from fantasytalking.testing.tiny import TINY_CLIP, TINY_T5, _build_tokenizer

    with torch.random.fork_rng(devices=[]), quiet_transformers():
        torch.manual_seed(seed)
        dit = WanTransformer3DModel(**copy.deepcopy(DEMO_DIT))
        transformer = FantasyTalkingTransformer(dit, audio_dim=DEMO_AUDIO["proj_dim"], text_len=DEMO_TEXT_LEN)
        audio = AudioConditioner(
            DEMO_AUDIO["audio_in_dim"], DEMO_AUDIO["proj_dim"], window_positions=DEMO_AUDIO["window_positions"],
            temporal_stride=DEMO_TEMPORAL_STRIDE, encoder=MelSpeechEncoder(), feature_extractor=MelFeatureExtractor(),
        )  # fmt: skip
        text_encoder = UMT5EncoderModel(UMT5Config(**TINY_T5))
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP))
        tokenizer = _build_tokenizer()
    for module in (text_encoder, image_encoder):
        module.requires_grad_(False).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_CLIP["image_size"]},
        crop_size={"height": TINY_CLIP["image_size"], "width": TINY_CLIP["image_size"]},
        do_center_crop=True, resample=3, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
    )  # fmt: skip
    return {
        "transformer": transformer.eval(),
        "conditioning": ConditioningStack([audio]).eval(),
        "vae": demo_vae(vae_path, seed=seed),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "image_encoder": image_encoder,
        "image_processor": image_processor,
    }


def demo_pipeline(
    vae_path: str | Path | None = None,
    seed: int = 0,
    *,
    conditioners: bool = True,
    conditioning: str | Path | None = None,
) -> FantasyTalkingPipeline:
    """The demo model (random weights; a random VAE unless ``vae_path`` is given), float32 on the CPU.

    Args:
        vae_path: a folder written by :meth:`WanVAETrainer.export_vae` (``save_pretrained`` with the latent
            statistics), or None for a random VAE with identity normalisation.
        seed: seed of every random weight.
        conditioners: add the face (:data:`DEMO_FACE`) and motion (:data:`DEMO_MOTION`) conditioners and the
            face branch. Training builds without them (``conditioners=False``): the training module attaches
            them from its own ``face`` / ``motion`` settings (``examples/configs/demo.yaml`` uses these sizes).
        conditioning: a trained demo model exported by ``examples/finetune.py`` (``conditioning.safetensors``
            of a ``trainable.mode: full`` run: backbone, audio, face and motion weights), loaded over the
            random weights; its conditioners come from the export (``conditioners`` is then ignored). The
            frozen umT5 / CLIP are not in the export: they are rebuilt from ``seed`` (use the training seed).
    """
    pipe = FantasyTalkingPipeline(**demo_components(vae_path, seed))
    if conditioning is not None:
        from fantasytalking.training.export import load_into_pipeline

        load_into_pipeline(pipe, conditioning)
        pipe.source_files.append(str(conditioning))
        return pipe
    if conditioners:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            attach_face(pipe.transformer, pipe.conditioning, FaceConfig(**DEMO_FACE))
            attach_motion(pipe.transformer, pipe.conditioning, MotionConfig(**DEMO_MOTION))
        pipe.conditioning.eval()
    return pipe


def demo_parameter_counts(pipe: FantasyTalkingPipeline) -> dict[str, int]:
    """Parameters per part of a (demo) pipeline, and ``total``; buffers excluded."""

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    backbone = count(pipe.transformer)
    conditioners = {f"conditioner_{c.name}": count(c) for c in pipe.conditioning}
    parts = {"transformer": backbone, **conditioners, "vae": count(pipe.vae),
             "text_encoder": count(pipe.text_encoder), "image_encoder": count(pipe.image_encoder)}  # fmt: skip
    parts["total"] = sum(parts.values())
    return parts
