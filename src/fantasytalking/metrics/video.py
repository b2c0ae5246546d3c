"""Video inputs shared by every metric: tensors ``(B, C, F, H, W)`` or lists of video files.

Value ranges (documented contract):

- ``uint8`` tensors are in ``[0, 255]``;
- float tensors are in ``[0, 1]`` by default (``value_range="01"``); pass ``value_range="11"`` for ``[-1, 1]``
  (the range the Wan VAE decodes to), or ``"auto"`` to treat a float tensor with any negative value as ``[-1, 1]``.

Internally every metric iterates videos one at a time as ``float32 (C, F, H, W)`` in ``[0, 1]`` so that videos of
different sizes (files from other systems) can be mixed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fantasytalking.errors import InputError

__all__ = [
    "AudioInput",
    "ImageInput",
    "ValueRange",
    "VideoInput",
    "iter_audio",
    "iter_frames_with_fps",
    "iter_images",
    "iter_videos",
    "read_video_file",
    "to_uint8_frames",
]

PathLike = str | os.PathLike[str]
ValueRange = Literal["01", "11", "auto"]
#: ``(B, C, F, H, W)`` tensor, one ``(C, F, H, W)`` tensor, or a sequence of video paths / ``(C, F, H, W)`` tensors.
VideoInput = torch.Tensor | Sequence[PathLike | torch.Tensor]
#: ``(B, C, H, W)`` tensor or a sequence of image paths / ``(C, H, W)`` tensors / ``uint8 (H, W, 3)`` arrays.
ImageInput = torch.Tensor | Sequence[PathLike | torch.Tensor | np.ndarray]
#: ``(B, S)`` waveforms, or a sequence of audio/video paths or 1-D waveforms.
AudioInput = torch.Tensor | Sequence[PathLike | torch.Tensor | np.ndarray]


def _to_unit(x: torch.Tensor, value_range: ValueRange) -> torch.Tensor:
    """Any supported tensor -> float32 in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    x = x.float()
    if value_range == "11" or (value_range == "auto" and x.numel() and float(x.min()) < 0):
        x = (x + 1.0) / 2.0
    elif value_range not in ("01", "auto"):
        raise InputError(f"value_range must be '01', '11' or 'auto', got {value_range!r}")
    return x.clamp(0.0, 1.0)


def read_video_file(path: PathLike) -> tuple[torch.Tensor, float, np.ndarray | None, int | None]:
    """A video file -> (``float32 (3, F, H, W)`` in [0, 1], fps, audio or None, sample rate or None)."""
    from fantasytalking.io import read_video

    p = Path(path)
    if not p.is_file():
        raise InputError(f"video file not found: {p}")
    frames, fps, audio, sr = read_video(p)  # uint8 (F, H, W, 3)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0  # (3, F, H, W)
    return video, float(fps), audio, sr


def iter_videos(videos: VideoInput, value_range: ValueRange = "01") -> Iterator[torch.Tensor]:
    """Yield each video as ``float32 (C, F, H, W)`` in [0, 1] (C = 3; a 1-channel video is repeated to 3)."""
    if isinstance(videos, torch.Tensor):
        if videos.ndim == 4:
            videos = videos[None]
        if videos.ndim != 5:
            raise InputError(f"videos must be (B, C, F, H, W), got shape {tuple(videos.shape)}")
        items: Sequence[PathLike | torch.Tensor] = list(videos)
    elif isinstance(videos, (str, os.PathLike)):
        items = [videos]
    else:
        items = videos
    for item in items:
        if isinstance(item, torch.Tensor):
            if item.ndim != 4:
                raise InputError(f"a video must be (C, F, H, W), got shape {tuple(item.shape)}")
            v = _to_unit(item, value_range)
        else:
            v = read_video_file(item)[0]
        if v.shape[0] == 1:
            v = v.expand(3, *v.shape[1:])
        if v.shape[0] != 3:
            raise InputError(f"videos must have 1 or 3 channels, got {v.shape[0]}")
        yield v


def iter_images(images: ImageInput, value_range: ValueRange = "01") -> Iterator[np.ndarray]:
    """Yield each image as ``uint8 (H, W, 3)`` RGB (the face tools' layout)."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise InputError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        items: Sequence[PathLike | torch.Tensor | np.ndarray] = list(images)
    elif isinstance(images, (str, os.PathLike)):
        items = [images]
    else:
        items = images
    for item in items:
        if isinstance(item, np.ndarray):
            yield np.ascontiguousarray(item.astype(np.uint8))
        elif isinstance(item, torch.Tensor):
            x = _to_unit(item, value_range)  # (C, H, W)
            if x.shape[0] == 1:
                x = x.expand(3, *x.shape[1:])
            yield (x.permute(1, 2, 0) * 255.0).round().to(torch.uint8).cpu().numpy()
        else:
            p = Path(item)
            if p.suffix.lower() in {".mp4", ".mov", ".mkv", ".avi", ".webm"}:
                yield to_uint8_frames(read_video_file(p)[0])[0]  # first frame of a reference video
            else:
                from fantasytalking.io import load_image

                yield np.asarray(load_image(p).convert("RGB"), dtype=np.uint8)


def iter_audio(audio: AudioInput, sample_rate: int = 16000, array_sr: int | None = None) -> Iterator[np.ndarray]:
    """Yield each waveform as mono ``float32 (S,)`` at ``sample_rate``: paths are decoded and resampled, arrays and
    tensors are taken to be at ``array_sr`` (default: already at ``sample_rate``)."""
    from fantasytalking.io import resample

    src = sample_rate if array_sr is None else int(array_sr)
    if isinstance(audio, torch.Tensor):
        items: Sequence[PathLike | torch.Tensor | np.ndarray] = list(audio if audio.ndim == 2 else audio[None])
    elif isinstance(audio, (str, os.PathLike)):
        items = [audio]
    else:
        items = audio
    for item in items:
        if isinstance(item, torch.Tensor):
            yield resample(item.detach().float().reshape(-1).cpu().numpy(), src, sample_rate)
        elif isinstance(item, np.ndarray):
            yield resample(np.asarray(item, dtype=np.float32).reshape(-1), src, sample_rate)
        else:
            from fantasytalking.io import load_audio

            wav, _ = load_audio(item, target_sr=sample_rate)
            yield np.asarray(wav, dtype=np.float32).reshape(-1)


def iter_frames_with_fps(
    videos: VideoInput, fps: float | None, value_range: ValueRange = "01"
) -> Iterator[tuple[np.ndarray, float | None]]:
    """Yield each video as ``(uint8 (F, H, W, 3), frame rate)``: a file's own rate, ``fps`` for tensors."""
    if isinstance(videos, torch.Tensor):
        for v in iter_videos(videos, value_range):
            yield to_uint8_frames(v), fps
        return
    items = [videos] if isinstance(videos, (str, os.PathLike)) else videos
    for item in items:
        if isinstance(item, torch.Tensor):
            yield to_uint8_frames(next(iter_videos([item], value_range))), fps
        else:
            video, rate, _, _ = read_video_file(item)
            yield to_uint8_frames(video), rate


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """``float (3, F, H, W)`` in [0, 1] -> ``uint8 (F, H, W, 3)`` (the face tools' layout)."""
    return (video.permute(1, 2, 3, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def iter_av(
    videos: VideoInput,
    audio: AudioInput | None = None,
    *,
    fps: float | Sequence[float] = 25.0,
    sample_rate: int = 16000,
    target_sr: int = 16000,
    value_range: ValueRange = "01",
) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """Pair videos with speech: yield ``(uint8 (F, H, W, 3), fps, float32 mono (S,) at target_sr)``.

    ``audio=None`` takes each video file's own audio track; tensor videos then need ``audio`` (``(B, S)`` at
    ``sample_rate``, or paths) and ``fps`` (files carry their own frame rate).
    """
    from fantasytalking.io import resample

    if isinstance(videos, torch.Tensor):
        items: list[PathLike | torch.Tensor] = list(videos if videos.ndim == 5 else videos[None])
    elif isinstance(videos, (str, os.PathLike)):
        items = [videos]
    else:
        items = list(videos)
    rates = [float(fps)] * len(items) if isinstance(fps, (int, float)) else [float(f) for f in fps]
    wavs: list[np.ndarray | None] = [None] * len(items)
    if audio is not None:
        wavs = list(iter_audio(audio, target_sr, array_sr=sample_rate))
    if len(wavs) != len(items) or len(rates) != len(items):
        raise InputError(f"got {len(items)} videos, {len(wavs)} audio tracks and {len(rates)} frame rates")
    for item, wav, rate in zip(items, wavs, rates):
        if isinstance(item, torch.Tensor):
            frames = to_uint8_frames(next(iter_videos([item], value_range)))
        else:
            video, rate, track_audio, track_sr = read_video_file(item)
            frames = to_uint8_frames(video)
            if wav is None:
                if track_audio is None or track_sr is None:
                    raise InputError(f"{item} has no audio track; pass the audio separately")
                wav = resample(np.asarray(track_audio, np.float32).reshape(-1), int(track_sr), target_sr)
        if wav is None:
            raise InputError("audio is required for video tensors (pass audio=...)")
        yield frames, rate, wav


class LazyLandmarkerMixin:
    """``self.landmarker``: the one given to the metric, else dlib's (offline), built on first use."""

    _landmarker: Any = None

    @property
    def landmarker(self) -> Any:
        if self._landmarker is None:
            from fantasytalking.face import make_landmarker

            self._landmarker = make_landmarker("dlib")
        return self._landmarker
