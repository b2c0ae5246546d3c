"""Output video: path checks, atomic H.264 + AAC mp4 writing with PyAV, JSON sidecar, and reading back.

Everything is written to a temporary file in the destination folder and moved into place with ``os.replace``
(or a no-clobber hard link when ``overwrite`` is false), so a failure at any point leaves nothing behind and an
existing file is never half-overwritten.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fantasytalking.errors import InputError

__all__ = [
    "AAC_SAMPLE_RATES",
    "check_output_path",
    "check_outputs",
    "decode_rgb24",
    "frame_to_rgb24",
    "probe_video",
    "read_video",
    "sidecar_path",
    "write_json_atomic",
    "write_video",
    "write_video_with_sidecar",
]

#: Sample rates the AAC encoder accepts; other rates are resampled to 48 kHz before encoding.
AAC_SAMPLE_RATES = frozenset({7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------------- frames


def frame_to_rgb24(frame: Any, reformatter: Any, *, width: int | None = None, height: int | None = None) -> np.ndarray:
    """A decoded PyAV frame as ``uint8 (H, W, 3)`` RGB, scaled on the calling thread through ``reformatter``.

    ``reformatter`` is an ``av.video.reformatter.VideoReformatter`` the caller made (one per container is enough).
    Not ``frame.to_ndarray(format="rgb24")``: that goes through a scaler PyAV keeps per thread, whose slice threads
    (one per core by default, PyAV >= 17) live in the process that first used it. A forked process, a DataLoader
    worker, inherits the scaler without its threads and waits for them forever (seen with PyAV 18.1.1: every
    worker of the first multi-worker loader after any decode in the parent hung). One thread also keeps several
    workers from each starting a thread per core.
    """
    rgb = reformatter.reformat(frame, format="rgb24", width=width, height=height, threads=1)
    return rgb.to_ndarray()  # no arguments: converts nothing, so PyAV's per-thread scaler is not touched


def decode_rgb24(container: Any, stream: Any) -> list[np.ndarray]:
    """Every frame of ``stream`` (a video stream of the open PyAV ``container``) as ``uint8 (H, W, 3)`` RGB, through
    one scaler made here (:func:`frame_to_rgb24`)."""
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()
    return [frame_to_rgb24(f, scaler) for f in container.decode(stream)]


# --------------------------------------------------------------------------------------------------- paths


def check_output_path(path: PathLike, overwrite: bool = False, *, suffix: str = ".mp4") -> Path:
    """Validate an output path before any work is done; returns it as a :class:`Path`.

    Raises :class:`InputError` if the suffix is not ``suffix`` (``.mp4``), the parent folder does not exist,
    the path is a folder, or the file exists and ``overwrite`` is false.
    """
    p = Path(path)
    if p.suffix.lower() != suffix.lower():
        raise InputError(f"output file must end in {suffix}, got {p}; change the file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}; create it first")
    if p.is_dir():
        raise InputError(f"output path is a folder: {p}; pass a file name ending in {suffix}")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise InputError(f"output file already exists: {p}; pass --overwrite or choose another name")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder is not writable: {parent}; choose another folder")
    return p


def sidecar_path(video_path: PathLike) -> Path:
    """JSON sidecar next to a video: ``out.mp4`` -> ``out.json``."""
    return Path(video_path).with_suffix(".json")


def _temp_path(final: Path) -> Path:
    """Create (exclusively, honouring the umask) an empty hidden temp file next to ``final``."""
    for _ in range(100):
        tmp = final.with_name(f".{final.stem}.{secrets.token_hex(6)}.tmp{final.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise OSError(f"could not create a temporary file next to {final}")


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk (best effort: some file systems refuse folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``final`` atomically; without ``overwrite`` never replace a file that appeared meanwhile."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # atomic and fails if final exists
    except FileExistsError:
        raise InputError(f"output file already exists: {final}; pass --overwrite or choose another name") from None
    except OSError:  # file system without hard links: best effort
        if final.exists():
            raise InputError(f"output file already exists: {final}; pass --overwrite or choose another name") from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def _atomic_target(final: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temp path next to ``final``; publish it on success, delete it on any exception."""
    tmp = _temp_path(final)
    try:
        yield tmp
        fsync_path(tmp)
        _publish(tmp, final, overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# --------------------------------------------------------------------------------------------------- JSON


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for paths, numpy/torch values, fractions and sets."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Fraction):
        return float(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | torch.Tensor):
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: PathLike, obj: Any, *, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically (temp file + ``os.replace``).

    Paths, numpy scalars/arrays, tensors and fractions are converted. The object is serialised before any file is
    created, so an unserialisable object leaves nothing written.
    """
    p = Path(path)
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=json_default) + "\n"
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}; create it first")
    if p.is_dir():
        raise InputError(f"output path is a folder: {p}; pass a file name")
    if p.exists() and not overwrite:
        raise InputError(f"output file already exists: {p}; pass --overwrite or choose another name")
    with _atomic_target(p, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------------------- writing


def _as_fraction(fps: float | Fraction) -> Fraction:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if isinstance(fps, Fraction):
        return fps
    if isinstance(fps, int) or float(value).is_integer():
        return Fraction(round(value))
    frac = Fraction(value).limit_denominator(1001)  # 29.97 -> 2997/100, 23.976 -> 2997/125
    return frac


def _frames_to_numpy(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"frames must have shape (F, H, W, 3), got {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (0..255), got {arr.dtype}; convert with (x * 255).round().clip(0, 255)")
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise InputError(f"frames are empty, shape {tuple(arr.shape)}")
    return arr


def _pad_even(arr: np.ndarray) -> np.ndarray:
    """H.264 yuv420p needs even sides: replicate the last row/column when a side is odd."""
    ph, pw = arr.shape[1] % 2, arr.shape[2] % 2
    if ph or pw:
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return arr


def _audio_to_numpy(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    a = np.asarray(audio)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1:
        raise InputError(f"audio must be mono with shape (T,), got {tuple(a.shape)}; average the channels first")
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        a = a.astype(np.float32) / float(max(abs(info.min), info.max))
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError("audio has non-finite samples (NaN or infinity); cannot write it")
    return np.clip(a, -1.0, 1.0)


def _prepare_video(
    frames: np.ndarray | torch.Tensor, fps: float | Fraction, audio: np.ndarray | torch.Tensor | None,
    sample_rate: int, crf: int,
) -> tuple[np.ndarray, Fraction, np.ndarray | None, int]:
    """Check and convert what :func:`write_video` writes: ``(frames, rate, audio or None, audio rate)``."""
    rate = _as_fraction(fps)
    arr = _pad_even(_frames_to_numpy(frames))
    if not 0 <= int(crf) <= 51:
        raise InputError(f"crf must be between 0 and 51, got {crf}")
    wav: np.ndarray | None = None
    sr = int(sample_rate)
    if audio is not None:
        if sr < 1:
            raise InputError(f"sample_rate must be positive, got {sample_rate}")
        wav = _audio_to_numpy(audio)
        n_keep = int(arr.shape[0] * sr / rate)  # trim to the video duration F / fps
        wav = wav[:n_keep]
        if sr not in AAC_SAMPLE_RATES:
            from fantasytalking.io.audio import resample

            wav, sr = resample(wav, sr, 48000), 48000
        if wav.size == 0:
            wav = None
    return arr, rate, wav, sr


#: libx264 options of every mp4 written. ``mbtree`` off: x264's AVX-512 macroblock-tree code
#: (``mbtree_propagate_list_avx512``) reads past the end of a row of macroblocks when the width in macroblocks is not
#: a multiple of 8 and adds what it finds there, uninitialised heap memory included, so on AVX-512 CPUs the same
#: frames gave different files (and decoded pixels off by up to ~38/255) from run to run: SynthTalk's 96-px shards
#: were not reproducible. Without it the files are about 25% larger at the same crf and quality (docs/design.md).
X264_OPTIONS = {"mbtree": "0"}


def _encode_mp4(target: Path, arr: np.ndarray, rate: Fraction, wav: np.ndarray | None, sr: int, crf: int) -> None:
    """Encode prepared frames (and mono audio) into ``target`` (a temp file)."""
    import av

    n_frames, height, width = arr.shape[0], arr.shape[1], arr.shape[2]
    with av.open(str(target), mode="w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=rate, options=X264_OPTIONS | {"crf": str(int(crf))})
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        astream = None
        if wav is not None:
            astream = container.add_stream("aac", rate=sr)
            astream.layout = "mono"
        for i in range(n_frames):
            vframe = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
            vframe.pts = i
            for packet in vstream.encode(vframe):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None and wav is not None:
            aframe = av.AudioFrame.from_ndarray(wav[None, :], format="fltp", layout="mono")
            aframe.sample_rate = sr
            aframe.pts = 0
            for packet in astream.encode(aframe):
                container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)


def write_video(
    path: PathLike,
    frames: np.ndarray | torch.Tensor,
    fps: float | Fraction,
    *,
    audio: np.ndarray | torch.Tensor | None = None,
    sample_rate: int = 16000,
    overwrite: bool = False,
    crf: int = 18,
) -> Path:
    """Write uint8 frames ``(F, H, W, 3)`` as an H.264 (libx264, yuv420p) mp4, with optional mono AAC audio.

    ``fps`` may be an int, float or :class:`Fraction`. Odd frame sides are padded by one replicated row/column.
    Audio is trimmed to the video duration ``F / fps`` (shorter audio is left shorter, never padded). The file is
    written atomically: a temp file in the same folder is moved into place only when complete; on any error
    nothing is left behind. Returns the output path.
    """
    p = check_output_path(path, overwrite)
    arr, rate, wav, sr = _prepare_video(frames, fps, audio, sample_rate, crf)
    with _atomic_target(p, overwrite) as tmp:
        _encode_mp4(tmp, arr, rate, wav, sr, crf)
    return p


def check_outputs(path: PathLike, overwrite: bool = False) -> Path:
    """:func:`check_output_path` for an mp4 and its JSON sidecar (:func:`sidecar_path`), both outputs of one run."""
    p = check_output_path(path, overwrite)
    side = sidecar_path(p)
    if side.is_dir():
        raise InputError(f"the settings sidecar {side} of {p.name} is a folder; choose another output name")
    if (side.exists() or side.is_symlink()) and not overwrite:
        raise InputError(f"output file already exists: {side} (the settings sidecar of {p.name}); pass --overwrite "
                         "or choose another name")  # fmt: skip
    return p


def _link_aside(final: Path) -> Path:
    """A hidden hard link (or, without hard links, a copy) of ``final`` next to it, to restore it from."""
    import shutil

    for _ in range(100):
        backup = final.with_name(f".{final.stem}.{secrets.token_hex(6)}.old{final.suffix}")
        try:
            os.link(final, backup)
        except FileExistsError:
            continue
        except OSError:  # no hard links here: keep a copy
            if backup.exists():
                continue
            shutil.copy2(final, backup)
        return backup
    raise OSError(f"could not keep a copy of {final} to restore it on failure")


def _publish_all(temps: list[Path], finals: list[Path], overwrite: bool) -> None:
    """Publish every temp file as its final path, or none: on a failure the ones already published are undone
    (a replaced file is restored)."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, final in zip(temps, finals, strict=True):
            backup = _link_aside(final) if overwrite and final.is_file() else None
            try:
                _publish(tmp, final, overwrite)
            except BaseException:
                if backup is not None:
                    backup.unlink(missing_ok=True)
                raise
            done.append((final, backup))
    except BaseException:
        for final, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup is None:
                    final.unlink(missing_ok=True)
                else:
                    os.replace(backup, final)
        raise
    for _, backup in done:
        if backup is not None:
            with contextlib.suppress(OSError):
                backup.unlink()


def write_video_with_sidecar(
    path: PathLike,
    frames: np.ndarray | torch.Tensor,
    fps: float | Fraction,
    record: Any,
    *,
    audio: np.ndarray | torch.Tensor | None = None,
    sample_rate: int = 16000,
    overwrite: bool = False,
    crf: int = 18,
) -> Path:
    """:func:`write_video` and its JSON sidecar ``record`` (:func:`sidecar_path`), as one atomic write: both files
    appear, or (on any error or interrupt) neither does and existing ones are left as they were. Without
    ``overwrite`` an existing sidecar is an error too. Returns the video path."""
    p = check_outputs(path, overwrite)
    side = sidecar_path(p)
    text = json.dumps(record, indent=2, ensure_ascii=False, default=json_default) + "\n"
    arr, rate, wav, sr = _prepare_video(frames, fps, audio, sample_rate, crf)
    temps: list[Path] = []
    try:
        temps.append(_temp_path(p))
        temps.append(_temp_path(side))
        _encode_mp4(temps[0], arr, rate, wav, sr, crf)
        temps[1].write_text(text, encoding="utf-8")
        for tmp in temps:
            fsync_path(tmp)
        _publish_all(temps, [p, side], overwrite)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    return p


# --------------------------------------------------------------------------------------------------- reading


def _open_for_read(path: PathLike) -> tuple[Path, Callable[[], Any]]:
    import av

    p = Path(path)
    if not p.exists():
        raise InputError(f"video file not found: {p}; check the path")
    if p.is_dir():
        raise InputError(f"video path is a folder, not a file: {p}")

    def opener() -> Any:
        try:
            return av.open(str(p), mode="r")
        except (av.FFmpegError, OSError, ValueError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise InputError(f"cannot open video file {p} ({reason}); the file may be corrupt") from None

    return p, opener


def _rate_of(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _stream_seconds(stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _decode_audio(container: Any, stream: Any) -> tuple[np.ndarray, int]:
    """Decode an audio stream to float32 mono ``(T,)`` at its own rate (channels averaged)."""
    from fantasytalking.io.audio import decode_av_stream

    data, sr = decode_av_stream(container, stream)
    mono = data.mean(axis=0, dtype=np.float64).astype(np.float32) if data.shape[0] > 1 else data[0]
    return np.ascontiguousarray(mono, dtype=np.float32), sr


def _video_stream(container: Any, p: Path) -> Any:
    """The first video stream of an open container (an error naming the file when there is none)."""
    if not container.streams.video:
        raise InputError(f"no video stream in {p}; pass a video file")
    return container.streams.video[0]


def _av_reason(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def read_video(path: PathLike) -> tuple[np.ndarray, float, np.ndarray | None, int | None]:
    """Decode a video file: ``(frames uint8 (F, H, W, 3), fps, audio float32 mono (T,) or None, sample_rate or None)``."""
    p, opener = _open_for_read(path)
    import av

    try:
        with opener() as container:
            vstream = _video_stream(container, p)
            fps = _rate_of(vstream)
            frames = decode_rgb24(container, vstream)
        audio, sr = None, None
        with opener() as container:
            if container.streams.audio:
                audio, sr = _decode_audio(container, container.streams.audio[0])
    except av.FFmpegError as err:
        raise InputError(f"cannot decode video file {p} ({_av_reason(err)}); the file may be corrupt") from None
    if not frames:
        raise InputError(f"video file has no frames: {p}")
    return np.stack(frames), fps, audio, sr


def video_header(path: PathLike) -> dict[str, Any]:
    """What a video file's headers say, nothing decoded or demuxed: ``fps`` (0.0 when unknown), ``width``,
    ``height``, ``has_audio``. :func:`probe_video` counts frames and samples instead."""
    p, opener = _open_for_read(path)
    import av

    try:
        with opener() as container:
            vs = _video_stream(container, p)
            return {"fps": _rate_of(vs), "width": vs.codec_context.width, "height": vs.codec_context.height,
                    "has_audio": bool(container.streams.audio)}  # fmt: skip
    except av.FFmpegError as err:
        raise InputError(f"cannot read video file {p} ({_av_reason(err)}); the file may be corrupt") from None


def probe_video(path: PathLike) -> dict[str, Any]:
    """Describe a video file: codecs, size, fps, frame count, video and audio durations (seconds).

    Keys: ``video_codec``, ``pix_fmt``, ``width``, ``height``, ``fps``, ``num_frames``, ``video_duration``,
    ``audio_codec``, ``sample_rate``, ``audio_channels``, ``audio_samples``, ``audio_duration`` (audio keys are
    ``None`` without an audio stream). Frame and sample counts come from demuxing/decoding, not headers.
    """
    p, opener = _open_for_read(path)
    import av

    info: dict[str, Any] = dict.fromkeys(
        ("video_codec", "pix_fmt", "width", "height", "fps", "num_frames", "video_duration",
         "audio_codec", "sample_rate", "audio_channels", "audio_samples", "audio_duration"),
    )  # fmt: skip
    try:
        with opener() as container:
            if container.streams.video:
                vs = container.streams.video[0]
                cc = vs.codec_context
                info.update(video_codec=cc.name, pix_fmt=cc.pix_fmt, width=cc.width, height=cc.height, fps=_rate_of(vs))
                count = sum(1 for pkt in container.demux(vs) if pkt.size)
                info["num_frames"] = count
                info["video_duration"] = count / info["fps"] if info["fps"] else _stream_seconds(vs)
        with opener() as container:
            if container.streams.audio:
                ast = container.streams.audio[0]
                info.update(audio_codec=ast.codec_context.name, audio_channels=ast.codec_context.channels)
                mono, sr = _decode_audio(container, ast)
                info.update(sample_rate=sr, audio_samples=int(mono.size), audio_duration=mono.size / sr if sr else None)
    except av.FFmpegError as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"cannot decode video file {p} ({reason}); the file may be corrupt") from None
    return info
