"""Driving audio: load as 16 kHz mono float32, measure, trim, and decide the clip length.

Clip rule (FANTASYTALKING.md 3.8): ``num_frames = min(int(fps * duration // 4) * 4 + 5, max_frames)``; the audio
used is ``[0, num_frames / fps]`` seconds, cut with ``int(seconds * sr)`` samples as the release does.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fantasytalking.errors import InputError

__all__ = [
    "MIN_AUDIO_SECONDS",
    "SOUNDFILE_SUFFIXES",
    "audio_duration",
    "audio_overflow_warning",
    "clip_frames",
    "clip_seconds",
    "load_audio",
    "resample",
    "trim_audio",
]

#: Suffixes read with soundfile (libsndfile); anything else (m4a, aac, mp4, mov, ...) is read with PyAV.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})

#: Shortest usable audio: wav2vec2's first feature needs 400 samples at 16 kHz (25 ms).
MIN_AUDIO_SECONDS = 0.025

# Largest reduced resampling factor handed to torchaudio as is (its kernel grows with the product of the two).
_MAX_RESAMPLE_FACTOR = 2000


def _read_soundfile(p: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (T, C)
    return data.T, int(sr)


def _wav_shortfall(p: Path) -> tuple[int, int] | None:
    """``(bytes the header's data chunk states, bytes present)`` when a RIFF/WAVE file is cut short (e.g. a partial
    download or copy, which libsndfile reads without complaint), else None. Streaming placeholders (a data size of 0
    or 0xFFFFFFFF) are not a truncation."""
    import struct

    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            if f.read(12)[:4] != b"RIFF":
                return None
            offset = 12
            while offset + 8 <= size:
                f.seek(offset)
                chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"data":
                    present = size - offset - 8
                    if chunk_size in (0, 0xFFFFFFFF) or chunk_size <= present:
                        return None
                    return chunk_size, present
                offset += 8 + chunk_size + (chunk_size & 1)
    except (OSError, struct.error):
        return None
    return None


def decode_av_stream(container: Any, stream: Any) -> tuple[np.ndarray, int]:
    """Decode one PyAV audio stream to planar float32 ``(C, T)`` at its own rate; returns ``(data, sr)``.

    Encoder tail padding (AAC pads to whole 1024-sample frames) is dropped when the container states a shorter
    duration, as mp4's edit list does; larger disagreements are left alone (headers of raw streams are estimates).
    """
    import av

    chunks: list[np.ndarray] = []
    sr = int(stream.codec_context.sample_rate or stream.rate or 0)
    resampler = av.AudioResampler(format="fltp")  # keep channels and rate, convert to planar float
    for frame in container.decode(stream):
        if not sr:
            sr = int(frame.sample_rate)
        chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    if not chunks:
        return np.zeros((1, 0), dtype=np.float32), sr
    channels = min(c.shape[0] for c in chunks)  # a mid-stream layout change: keep the common channels
    data = np.concatenate([c[:channels] for c in chunks], axis=1).astype(np.float32, copy=False)
    if stream.duration is not None and stream.time_base is not None and sr:
        stated = round(float(stream.duration * stream.time_base) * sr)
        excess = data.shape[1] - stated
        if 0 < excess <= max(2048, 2 * int(stream.codec_context.frame_size or 0)):
            data = data[:, :stated]
    return data, sr


def _read_pyav(p: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container PyAV can open; returns ``((C, T) float32, sr)``."""
    import av

    with av.open(str(p), mode="r") as container:
        if not container.streams.audio:
            raise InputError(f"no audio stream in {p}; pass a file that contains speech audio")
        return decode_av_stream(container, container.streams.audio[0])


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float waveform with ``torchaudio.functional.resample`` (no-op when the rates match)."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    import torchaudio.functional as taf

    g = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // g, int(target_sr) // g
    if max(orig, new) > _MAX_RESAMPLE_FACTOR:
        # torchaudio's kernel is (new, orig + width): for odd rates (e.g. 44101 Hz) approximate the ratio instead;
        # the relative error is below 1e-5, far under anything audible or visible in lip timing.
        ratio = Fraction(int(target_sr), int(orig_sr)).limit_denominator(_MAX_RESAMPLE_FACTOR)
        if ratio.numerator > _MAX_RESAMPLE_FACTOR:  # large upsampling ratio: bound the numerator instead
            inv = Fraction(int(orig_sr), int(target_sr)).limit_denominator(_MAX_RESAMPLE_FACTOR)
            ratio = 1 / inv
        orig, new = ratio.denominator, ratio.numerator
    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    y = taf.resample(x, orig, new)
    return y.numpy().astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike[str], target_sr: int = 16000) -> tuple[np.ndarray, int]:
    """Load speech audio as float32 mono ``(T,)`` at ``target_sr``; returns ``(waveform, original_sr)``.

    wav/flac/ogg/mp3 go through soundfile (falling back to PyAV), everything else (m4a, aac, the audio track of
    mp4/mov, ...) through PyAV. Channels are averaged to mono. Raises :class:`InputError` naming the path for a
    missing, unreadable or undecodable file, a file with no audio stream, empty audio, or non-finite samples.
    """
    import av

    p = Path(path)
    if target_sr < 1:
        raise InputError(f"target sample rate must be positive, got {target_sr}")
    if not p.exists():
        raise InputError(f"audio file not found: {p}; check the path")
    if p.is_dir():
        raise InputError(f"audio path is a folder, not a file: {p}; pass an audio file (wav, mp3, flac, m4a, ...)")
    if not os.access(p, os.R_OK):
        raise InputError(f"cannot read audio file (permission denied): {p}; check its permissions")
    if p.stat().st_size == 0:
        raise InputError(f"audio file is empty (0 bytes): {p}; pass a file that contains speech")

    data: np.ndarray | None = None
    sr = 0
    first_error: Exception | None = None
    if p.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            data, sr = _read_soundfile(p)
        except Exception as err:  # libsndfile refused it: let FFmpeg try (e.g. a mislabeled file)
            first_error = err
    if data is None:
        try:
            data, sr = _read_pyav(p)
        except InputError:
            raise
        except (av.FFmpegError, OSError, ValueError, RuntimeError) as err:
            reason = " ".join(str(first_error or err).split()) or type(err).__name__
            raise InputError(
                f"cannot decode audio file {p} ({reason}); convert it to wav, flac or mp3 and try again"
            ) from None

    if sr < 1:
        raise InputError(f"audio file {p} reports no sample rate; convert it to wav and try again")
    shortfall = _wav_shortfall(p) if p.suffix.lower() == ".wav" else None
    if shortfall is not None:
        stated, present = shortfall
        raise InputError(f"audio file is truncated: {p} holds {present} of the {stated} bytes of sound its header "
                         f"states ({present / stated:.0%}); copy or export it again")  # fmt: skip
    if data.size == 0 or data.shape[-1] == 0:
        raise InputError(f"audio file contains no samples (zero length): {p}; pass a file that contains speech")
    if not np.all(np.isfinite(data)):
        raise InputError(f"audio file has non-finite samples (NaN or infinity): {p}; re-export it as 16-bit wav")
    mono = data.mean(axis=0, dtype=np.float64).astype(np.float32) if data.shape[0] > 1 else data[0]
    mono = resample(mono, sr, target_sr)
    if mono.size == 0:
        raise InputError(f"audio file is too short to use: {p}; pass a longer recording")
    return np.ascontiguousarray(mono, dtype=np.float32), sr


def audio_duration(waveform: np.ndarray | torch.Tensor, sr: int) -> float:
    """Duration in seconds of a waveform whose last axis is time."""
    if sr <= 0:
        raise InputError(f"sample rate must be positive, got {sr}")
    return float(waveform.shape[-1]) / float(sr)


def trim_audio(waveform: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    """The first ``seconds`` of ``waveform`` (last axis = time), cut at ``int(seconds * sr)`` samples like the release.

    Audio shorter than ``seconds`` is returned whole (never padded).
    """
    if sr <= 0:
        raise InputError(f"sample rate must be positive, got {sr}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"trim length must be a finite number of seconds >= 0, got {seconds}")
    return waveform[..., : int(seconds * sr)]


def _check_fps_frames(fps: float, max_frames: int) -> None:
    try:
        ok = math.isfinite(float(fps)) and float(fps) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if max_frames < 5 or (max_frames - 1) % 4 != 0:
        raise InputError(f"max_frames must be 4k+1 and at least 5 (e.g. 81), got {max_frames}")


def clip_frames(duration_s: float, fps: float = 23, max_frames: int = 81) -> int:
    """Number of video frames for audio of ``duration_s`` seconds: ``min(int(fps * d // 4) * 4 + 5, max_frames)``.

    Always of the form 4k+1 (>= 5). Raises :class:`InputError` if the audio is shorter than one video frame
    (or than the 25 ms wav2vec2 needs for one feature), since no frame could be driven by it.
    """
    _check_fps_frames(fps, max_frames)
    if not math.isfinite(duration_s) or duration_s < 0:
        raise InputError(f"audio duration must be a finite number of seconds, got {duration_s}")
    shortest = max(1.0 / fps, MIN_AUDIO_SECONDS)
    if duration_s < shortest:
        raise InputError(
            f"audio is {duration_s:.3f} s, too short to drive even one frame (needs at least {shortest:.3f} s "
            f"at {fps:g} fps); pass a longer recording"
        )
    return min(int(fps * duration_s // 4) * 4 + 5, max_frames)


def clip_seconds(num_frames: int, fps: float = 23) -> float:
    """Seconds of audio a clip of ``num_frames`` uses: ``num_frames / fps``."""
    return num_frames / fps


def audio_overflow_warning(duration_s: float, num_frames: int, fps: float = 23) -> str | None:
    """Warning text when the audio is longer than the clip uses, else ``None``.

    E.g. ``"audio is 12.3 s; this clip uses the first 3.5 s (81 frames at 23 fps)"``. Overflow shorter than
    one video frame is not reported.
    """
    used = clip_seconds(num_frames, fps)
    if duration_s - used <= 1.0 / fps:
        return None
    a, u = f"{duration_s:.1f}", f"{used:.1f}"
    if a == u:
        a, u = f"{duration_s:.2f}", f"{used:.2f}"
    return f"audio is {a} s; this clip uses the first {u} s ({num_frames} frames at {fps:g} fps)"
