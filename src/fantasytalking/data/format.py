"""The shard format: the one contract between preprocessing (writer) and training (reader).

A preprocessed dataset is a folder::

    shard-000000.tar, shard-000001.tar, ...   WebDataset tar shards, one sample per clip
    manifest.jsonl     one line per clip in a finished shard:
                       {"key", "shard", "source", "clip", "t0", "num_frames", "fps", "motion": {"face", "body"}}
    rejections.jsonl   one line per dropped video or clip: {"source", "clip" (null: whole video), "key", "t0",
                       "reason" (a REASONS code), "detail" (one line)}
    stats.json         motion statistics over the manifest: {"face": {...}, "body": {...}, "num_clips",
                       "clip_frames" (the clip lengths measured; since 2026-12-07), "normalisation"};
                       each of face/body holds count, min, max, mean, p1, p5, p50, p95, p99
                       and "quantiles" (raw values at the levels k / 20, min to max; since 2026-12-06: the
                       motion conditioner's request scale)
    progress.jsonl     one line per finished input video (how a re-run knows what is done)
    preprocess.json    the settings the folder was written with (a re-run must use the same)
    .preprocess.lock   held while a run writes the folder

Shards are written under a hidden temporary name and renamed when complete, so a ``shard-*.tar`` is always whole.

One sample (WebDataset key ``<stem>_<clip:04d>``; ``stem`` is the video's file stem with every character outside
``[A-Za-z0-9_-]`` replaced by ``_`` (WebDataset splits member names at the first dot), plus ``-<8 hex>`` of the
source path when two videos share a stem). Members, named ``<key>.<suffix>``:

============================  ===================================================================================
``video.mp4``                 the clip: ``N`` frames at ``fps``, ``size x size``, face-centred, H.264 yuv420p,
                              no audio
``audio.npy``                 ``float32 (T,)`` 16 kHz mono, exactly ``[t0, t0 + N / fps)``:
                              ``T = round(N * 16000 / fps)`` samples from sample
                              ``round((t0 + av_offset) * 16000)`` of the source's audio
``landmarks.npy``             ``float32 (N, 68, 2)`` iBUG-68 landmarks, pixel ``(x, y)`` of the clip frames
``lip_mask.npy``              ``uint8 (N, size, ceil(size / 8))``: the ``(N, size, size)`` 0/1 lip masks packed
                              with ``np.packbits(axis=-1)`` (big bit order); the unpacked shape is
                              ``meta["lip_mask_shape"]``; :func:`unpack_lip_mask` undoes it
``face.png``                  ``uint8 (S, S, 3)`` aligned reference face (ArcFace 5-point layout) from frame 0
``face_embedding.npy``        ``float32 (E,)`` identity embedding of that face (dlib: ``E = 128``)
``motion.json``               ``{"face": float, "body": float}`` raw intensities (see
                              :mod:`fantasytalking.face.motion`), not normalised
``meta.json``                 everything else: see :data:`META_KEYS`
``wav2vec.npy`` (optional)    ``float16 (L, A)`` wav2vec2 ``last_hidden_state`` of ``audio.npy``
``latents.npy`` (optional)    ``float16 (16, F, size / 8, size / 8)``, ``F = (N - 1) / 4 + 1``: the Wan VAE
                              posterior mode of the clip frames, normalised ``(z - latents_mean) / latents_std``
============================  ===================================================================================
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "AUDIO",
    "AUDIO_SAMPLE_RATE",
    "DEFAULT_PROMPT",
    "FACE",
    "FACE_EMBEDDING",
    "FORMAT_VERSION",
    "LANDMARKS",
    "LATENTS",
    "LIP_MASK",
    "MANIFEST",
    "META",
    "META_KEYS",
    "MOTION",
    "OPTIONAL_MEMBERS",
    "PROGRESS",
    "REASONS",
    "REJECTIONS",
    "REQUIRED_MEMBERS",
    "SETTINGS",
    "SHARD_GLOB",
    "STATS",
    "VIDEO",
    "WAV2VEC",
    "audio_span",
    "clip_key",
    "decode_mp4",
    "decode_png",
    "encode_png",
    "from_npy",
    "latent_frames",
    "pack_lip_mask",
    "read_json_bytes",
    "safe_stem",
    "shard_index",
    "shard_name",
    "to_npy",
    "unique_stem",
    "unpack_lip_mask",
]

FORMAT_VERSION = 1
AUDIO_SAMPLE_RATE = 16_000
DEFAULT_PROMPT = "A person is talking."

# Files of the dataset folder.
SHARD_GLOB = "shard-*.tar"
MANIFEST = "manifest.jsonl"
REJECTIONS = "rejections.jsonl"
STATS = "stats.json"
PROGRESS = "progress.jsonl"
SETTINGS = "preprocess.json"

# Member suffixes of one sample.
VIDEO = "video.mp4"
AUDIO = "audio.npy"
LANDMARKS = "landmarks.npy"
LIP_MASK = "lip_mask.npy"
FACE = "face.png"
FACE_EMBEDDING = "face_embedding.npy"
MOTION = "motion.json"
META = "meta.json"
WAV2VEC = "wav2vec.npy"
LATENTS = "latents.npy"
REQUIRED_MEMBERS = (VIDEO, AUDIO, LANDMARKS, LIP_MASK, FACE, FACE_EMBEDDING, MOTION, META)
OPTIONAL_MEMBERS = (WAV2VEC, LATENTS)

#: Keys of ``meta.json`` (all present; optional-member entries are null when absent).
META_KEYS = {
    "format_version": "int, FORMAT_VERSION",
    "key": "the sample key",
    "source": "absolute path of the source video",
    "clip": "clip index within the source video",
    "t0": "start in seconds from the source's first video frame (clip frame j = source frame shown at t0 + j / fps)",
    "fps": "clip frame rate",
    "num_frames": "N",
    "size": "clip side in pixels",
    "audio_sample_rate": "16000",
    "audio_samples": "T = len(audio.npy)",
    "audio_start_sample": "round((t0 + av_offset) * 16000), index into the source's 16 kHz audio",
    "av_offset": "seconds from the source's first audio sample to its first video frame (container timestamps)",
    "source_fps": "frame rate of the source video",
    "source_size": "[height, width] of the source frames used (after any --work-max-side downscale)",
    "crop_box": "[x0, y0, x1, y1] of the square crop in source pixels",
    "landmark_backend": "e.g. dlib-hog or face-alignment",
    "face_missing_fraction": "fraction of frames where the detector missed the face (landmarks carried)",
    "face_size": "side S of face.png",
    "face_encoder": "e.g. dlib-resnet-v1 or arcface",
    "embedding_dim": "E",
    "lip_mask_shape": "[N, size, size] before packing",
    "lip_margin": "dilation as a fraction of the mouth width",
    "pose_source": "body-joint source of the body intensity, e.g. head-shoulder-proxy",
    "prompt": "text prompt (the video's <stem>.txt next to it, else the --prompt default)",
    "wav2vec": "null or {shape, dtype, model}",
    "latents": "null or {shape, dtype, vae, normalised}",
}

#: Rejection reason codes of ``rejections.jsonl``.
REASONS = {
    "not_found": "the input path does not exist",
    "unreadable": "the file cannot be opened or decoded as a video",
    "no_audio": "no audio stream, or the audio cannot be decoded",
    "too_short": "shorter than one clip",
    "no_face": "no face detected in the clip",
    "face_lost": "the face was missed in too many frames",
    "face_too_small": "the face is smaller than --min-face-px",
    "multiple_faces": "another face as large as --max-second-face of the tracked one",
    "silent": "clip audio below --min-audio-rms",
    "decode_error": "decoding failed part-way; earlier clips were kept",
    "error": "an unexpected error (message in detail)",
}

_SHARD_RE = re.compile(r"^shard-(\d{6,})\.tar$")


def shard_name(index: int) -> str:
    """``shard-000042.tar``."""
    return f"shard-{index:06d}.tar"


def shard_index(name: str) -> int | None:
    """Index of a shard file name, or None when the name is not a shard's."""
    m = _SHARD_RE.match(name)
    return int(m.group(1)) if m else None


def safe_stem(name: str) -> str:
    """A file stem usable in WebDataset keys: ``[A-Za-z0-9_-]`` only (``my.talk 01`` -> ``my_talk_01``)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return stem or "video"


def unique_stem(name: str, source: str, taken: set[str]) -> str:
    """:func:`safe_stem`, with ``-<8 hex of sha1(source)>`` appended when another source already has it."""
    stem = safe_stem(name)
    if stem in taken:
        stem = f"{stem}-{hashlib.sha1(source.encode('utf-8')).hexdigest()[:8]}"
    return stem


def clip_key(stem: str, clip: int) -> str:
    """``<stem>_<clip:04d>``."""
    return f"{stem}_{clip:04d}"


def audio_span(t0: float, num_frames: int, fps: float, sample_rate: int = AUDIO_SAMPLE_RATE) -> tuple[int, int]:
    """``(start, length)`` in samples of the audio of a clip: ``round(t0 * sr)``, ``round(N * sr / fps)``."""
    return round(t0 * sample_rate), round(num_frames * sample_rate / fps)


def latent_frames(num_frames: int) -> int:
    """Latent frames of the Wan VAE (temporal stride 4, causal first frame): ``(N - 1) // 4 + 1``."""
    return (num_frames - 1) // 4 + 1


# --------------------------------------------------------------------------------------------------- codecs


def to_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    """Array from ``.npy`` bytes (pickled objects refused)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def pack_lip_mask(mask: np.ndarray) -> np.ndarray:
    """``uint8 (N, H, W)`` 0/1 -> ``uint8 (N, H, ceil(W / 8))`` bits (8x smaller, lossless)."""
    return np.packbits(np.asarray(mask, dtype=np.uint8) > 0, axis=-1)


def unpack_lip_mask(packed: np.ndarray, shape: tuple[int, int, int] | list[int]) -> np.ndarray:
    """Inverse of :func:`pack_lip_mask`: ``uint8 (N, H, W)`` in {0, 1}; checks the shape matches."""
    n, h, w = (int(v) for v in shape)
    if packed.shape != (n, h, (w + 7) // 8):
        raise ValueError(f"packed lip mask has shape {packed.shape}, expected {(n, h, (w + 7) // 8)} for {shape}")
    return np.unpackbits(packed, axis=-1, count=w)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8 (H, W, 3)`` image."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """``uint8 (H, W, 3)`` from PNG bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def decode_mp4(data: bytes) -> np.ndarray:
    """All frames of an in-memory mp4 as ``uint8 (N, H, W, 3)`` (raises on undecodable data or no frames)."""
    import av

    from fantasytalking.io.video import decode_rgb24  # its own scaler: this runs in forked DataLoader workers

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("mp4 has no video stream")
        frames = decode_rgb24(container, container.streams.video[0])
    if not frames:
        raise ValueError("mp4 has no frames")
    return np.stack(frames)


def read_json_bytes(data: bytes) -> dict[str, Any]:
    """A JSON object from UTF-8 bytes."""
    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, Mapping):
        raise ValueError("expected a JSON object")
    return dict(obj)
