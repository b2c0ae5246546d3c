"""Preprocessing: talking videos with sound -> WebDataset shards of fixed-length, face-centred clips.

The shard format is defined in :mod:`fantasytalking.data.format`. Command line (``fantasytalking preprocess``
or ``python -m fantasytalking.data``)::

    # a folder of videos (searched recursively) -> 81-frame clips at 23 fps, 512 px, offline dlib landmarks
    python -m fantasytalking.data videos/ --out shards/ --landmarks dlib

    # small clips for a CPU test run, with cached wav2vec2 features and Wan VAE latents
    python -m fantasytalking.data videos/ list.txt --out shards/ --size 128 --num-frames 17 \\
        --cache-features weights/wav2vec2-base-960h --cache-latents weights/Wan2.1-I2V-14B-720P

Per video: the frames are decoded as a stream and resampled to ``--fps`` (each clip frame is the source frame
shown at that instant), the audio is loaded at 16 kHz mono, and clip ``c`` covers clip frames
``[c * stride, c * stride + N)`` (``t0 = c * stride / fps``). Per clip: one face is tracked, one square crop box
is chosen for the whole clip (:func:`~fantasytalking.face.track.clip_crop_box`), the crop is resized to
``--size``, the landmarks are mapped into it and rasterised into lip masks, the reference face is aligned from the
first frame and embedded, and the facial and body motion intensities are measured. Clips and videos that cannot
be used are written to ``rejections.jsonl`` with a reason code (``format.REASONS``).

Safety: shards are written under a hidden temporary name and renamed when complete; ``manifest.jsonl`` lines are
appended only for clips of renamed shards; a video is recorded as done in ``progress.jsonl`` only once all its
clips are in renamed shards. A re-run with the same settings skips done videos and every clip key already in the
manifest, so an interrupted run resumes without duplicating clips. A lock file stops two runs sharing a folder.
Rejected videos count as done too; to retry one (say after fixing its file), delete its line from
``progress.jsonl`` (its clip keys and rejection lines are never duplicated).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fantasytalking.data import format as fmt
from fantasytalking.errors import FantasyTalkingError, InputError
from fantasytalking.face.align import align_face
from fantasytalking.face.embed import FaceEncoder, make_face_encoder
from fantasytalking.face.landmarks import LandmarkBackend, NoFaceError, make_landmarker
from fantasytalking.face.mask import DEFAULT_LIP_MARGIN, lip_mask
from fantasytalking.face.motion import (
    HeadShoulderProxy,
    PoseSource,
    body_intensity,
    facial_intensity,
    intensity_stats,
)
from fantasytalking.face.track import clip_crop_box, crop_frames, landmarks_to_crop, track_face
from fantasytalking.io import load_audio, write_json_atomic, write_video
from fantasytalking.io.video import frame_to_rgb24, fsync_path, json_default

__all__ = [
    "VIDEO_SUFFIXES",
    "PreprocessConfig",
    "PreprocessReport",
    "Preprocessor",
    "add_preprocess_arguments",
    "config_from_args",
    "find_videos",
    "preprocess",
    "preprocess_from_args",
    "preprocess_main",
    "read_jsonl",
    "write_stats",
]

log = logging.getLogger("fantasytalking.data.preprocess")

#: File suffixes picked up when a folder is given.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".ts"})
#: An input with one of these suffixes is a list of video paths, one a line (relative to the list's folder).
LIST_SUFFIXES = frozenset({".txt", ".lst"})

# Settings a re-run must share with the run that started the folder (else the dataset would be mixed).
_FIXED_SETTINGS = ("fps", "num_frames", "size", "stride", "face_size", "face_encoder", "cache_features",
                   "cache_latents", "format_version")  # fmt: skip


# --------------------------------------------------------------------------------------------------- config


@dataclass
class PreprocessConfig:
    """Every preprocessing setting (the CLI options map one to one; see ``--help``)."""

    out_dir: Path
    fps: float = 23.0
    num_frames: int = 81
    size: int = 512
    stride: int | None = None
    max_clips_per_video: int | None = None
    landmarks: str = "auto"
    detector: str = "hog"
    detect_every: int = 1
    crop_scale: float = 2.4
    lip_margin: float = DEFAULT_LIP_MARGIN
    face_size: int = 224
    face_encoder: str = "dlib"
    max_missing: float = 0.2
    min_face_px: float = 64.0
    max_second_face: float = 0.5
    min_audio_rms: float = 1e-4
    clips_per_shard: int = 100
    max_shard_mb: float = 2048.0
    work_max_side: int | None = 1920
    prompt: str = fmt.DEFAULT_PROMPT
    cache_features: Path | None = None
    cache_latents: Path | None = None
    device: str = "cpu"
    crf: int = 18

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.stride is None:
            self.stride = self.num_frames
        self.cache_features = Path(self.cache_features) if self.cache_features else None
        self.cache_latents = Path(self.cache_latents) if self.cache_latents else None

    def validate(self) -> None:
        """Raise :class:`InputError` for an unusable setting, before any work."""
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"--fps must be a positive number, got {self.fps}")
        if self.num_frames < 5 or (self.num_frames - 1) % 4:
            raise InputError(f"--num-frames must be 4k+1 and at least 5 (e.g. 17, 81), got {self.num_frames}")
        if self.size < 16 or self.size % 16:
            raise InputError(f"--size must be a multiple of 16 (the VAE and patch strides), got {self.size}")
        if self.stride is None or self.stride < 1:
            raise InputError(f"--stride must be at least 1 frame, got {self.stride}")
        if self.max_clips_per_video is not None and self.max_clips_per_video < 1:
            raise InputError("--max-clips-per-video must be at least 1")
        if self.detect_every < 1:
            raise InputError("--detect-every must be at least 1")
        if self.crop_scale <= 0 or self.lip_margin < 0:
            raise InputError("--crop-scale must be > 0 and --lip-margin >= 0")
        if self.face_size < 16:
            raise InputError(f"--face-size must be at least 16 px, got {self.face_size}")
        if not 0 <= self.max_missing <= 1 or not self.max_second_face > 0:
            raise InputError("--max-missing must be in [0, 1] and --max-second-face > 0")
        if self.clips_per_shard < 1 or self.max_shard_mb <= 0:
            raise InputError("--clips-per-shard must be >= 1 and --max-shard-mb > 0")
        if self.landmarks not in ("auto", "dlib", "face-alignment"):
            raise InputError(f"--landmarks must be auto, dlib or face-alignment, got {self.landmarks!r}")
        if self.detector not in ("hog", "cnn"):
            raise InputError(f"--detector must be hog or cnn, got {self.detector!r}")
        for what, path in (("--cache-features", self.cache_features), ("--cache-latents", self.cache_latents)):
            if path is not None and not path.exists():
                raise InputError(f"{what} folder does not exist: {path}; check the path")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"--out must be a folder, but {self.out_dir} is a file")

    def settings(self) -> dict[str, Any]:
        """The dataset-defining settings recorded in ``preprocess.json``."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        out.pop("out_dir")
        out["cache_features"] = self.cache_features is not None
        out["cache_latents"] = self.cache_latents is not None
        out["format_version"] = fmt.FORMAT_VERSION
        return out


@dataclass
class PreprocessReport:
    """What a run did (counts over this run only; the folder's files hold the totals)."""

    out_dir: Path
    videos_seen: int = 0
    videos_skipped: int = 0
    videos_done: int = 0
    videos_rejected: int = 0
    clips_written: int = 0
    clips_rejected: int = 0
    clips_already_present: int = 0
    shards_written: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"{self.clips_written} clips written to {len(self.shards_written)} new shards in {self.out_dir}; "
            f"{self.videos_done} videos done, {self.videos_skipped} already done, {self.videos_rejected} rejected; "
            f"{self.clips_rejected} clips rejected (reasons: {why})"
        )


class _Reject(Exception):
    """A video or clip cannot be used: ``reason`` is a ``format.REASONS`` code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = " ".join(str(detail).split())


# --------------------------------------------------------------------------------------------------- inputs


def find_videos(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (recursively, :data:`VIDEO_SUFFIXES`), list files (``.txt``/``.lst``) and single files.

    Paths in a list file may be relative to the list's folder; blank lines and ``#`` comments are ignored. The
    result is absolute, in input order, without duplicates. A missing top-level input raises :class:`InputError`;
    a missing path inside a list is kept (it is rejected as ``not_found`` later).
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if not p.exists():
            raise InputError(f"input not found: {p}; pass video files, folders of videos or .txt lists of paths")
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES))
        elif p.suffix.lower() in LIST_SUFFIXES:
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line).expanduser()
                    found.append(q if q.is_absolute() else p.parent / q)
        else:
            found.append(p)
    unique: dict[str, Path] = {}
    for q in found:
        unique.setdefault(str(q.absolute().resolve()), q.absolute().resolve())
    return list(unique.values())


# --------------------------------------------------------------------------------------------------- decoding


class _VideoStream:
    """Streaming decode of a video's first video stream, resampled to a target frame rate.

    Clip frame ``k`` is the source frame on screen at ``k / fps`` (the last frame whose timestamp is not later),
    so no more than one source frame is held at a time besides what the caller buffers.
    """

    def __init__(self, path: Path, fps: float, max_side: int | None) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self.path = path
        self.fps = float(fps)
        self._scaler = VideoReformatter()  # this reader's own (see frame_to_rgb24)
        try:
            self._container = av.open(str(path), mode="r")
        except (av.FFmpegError, OSError, ValueError) as err:
            raise _Reject("unreadable", f"cannot open as a video ({_one_line(err)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise _Reject("unreadable", "the file has no video stream")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.source_fps = float(rate) if rate else 0.0
        cc = self._stream.codec_context
        self.width, self.height = int(cc.width or 0), int(cc.height or 0)
        self.out_size: tuple[int, int] | None = None  # (w, h) after the work-size cap
        if max_side and self.width and self.height and max(self.width, self.height) > max_side:
            f = max_side / max(self.width, self.height)
            self.out_size = (max(2, round(self.width * f)), max(2, round(self.height * f)))
        self.decode_error: str | None = None
        self.frames_out = 0  # frames yielded at the target rate so far
        self.first_frame_time: float | None = None  # container time of the first video frame, seconds
        self.audio_start = 0.0  # container time of the first audio sample, seconds
        if self._container.streams.audio:
            ast = self._container.streams.audio[0]
            if ast.start_time is not None and ast.time_base is not None:
                self.audio_start = float(ast.start_time * ast.time_base)

    @property
    def av_offset(self) -> float:
        """Seconds from the first audio sample to the first video frame (0 for most files; known once decoding
        has started). Audio index of clip time ``t`` is ``round((t + av_offset) * sr)``."""
        return (self.first_frame_time or 0.0) - self.audio_start

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()

    def _to_array(self, frame: Any) -> np.ndarray:
        w, h = self.out_size if self.out_size is not None else (None, None)
        return frame_to_rgb24(frame, self._scaler, width=w, height=h)

    def frames(self) -> Iterator[np.ndarray]:
        """``uint8 (H, W, 3)`` frames at the target rate; a decode error ends the stream (see ``decode_error``)."""
        import av

        eps = 1e-6
        k, count = 0, 0
        t_first: float | None = None
        pending: Any = None
        pending_arr: np.ndarray | None = None
        t_last = 0.0
        period = 1.0 / self.source_fps if self.source_fps > 0 else 1.0 / self.fps
        try:
            for frame in self._container.decode(self._stream):
                t_abs = frame.time if frame.time is not None else count * period
                if t_first is None:
                    t_first = self.first_frame_time = float(t_abs)
                t = t_abs - t_first
                count += 1
                while pending is not None and k / self.fps < t - eps:  # instants the pending frame is on screen
                    if pending_arr is None:
                        pending_arr = self._to_array(pending)
                    yield pending_arr
                    k += 1
                    self.frames_out = k
                pending, pending_arr, t_last = frame, None, t
        except av.FFmpegError as err:
            self.decode_error = f"decoding stopped after {count} frames ({_one_line(err)})"
        if pending is not None and self.decode_error is None:
            end = t_last + period  # the last frame stays on screen for one source frame period
            while k / self.fps < end - eps:
                if pending_arr is None:
                    pending_arr = self._to_array(pending)
                yield pending_arr
                k += 1
                self.frames_out = k


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# --------------------------------------------------------------------------------------------------- files


def read_jsonl(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file (missing file: none). With ``repair``, a torn last line (a crash during an
    append) is cut off the file; other unparsable lines are skipped with a warning."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    if repair and raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line left by an interrupted run", path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        raw = raw[:cut]
    out = []
    for i, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON; ignored", path, i)
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    if not records:
        return
    text = "".join(json.dumps(r, ensure_ascii=False, default=json_default) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_stats(out_dir: Path) -> dict[str, Any]:
    """Recompute ``stats.json`` from every line of ``manifest.jsonl`` (so resumed runs count all clips)."""
    records = read_jsonl(out_dir / fmt.MANIFEST)
    stats = {
        "num_clips": len(records),
        # raw motion grows with the clip's length (a variance over its frames), so a table only fits clips of the
        # lengths it was measured on: the datamodule warns when it is used for shards of another length
        "clip_frames": sorted({int(r["num_frames"]) for r in records if r.get("num_frames") is not None}),
        "face": intensity_stats(r["motion"]["face"] for r in records if "motion" in r),
        "body": intensity_stats(r["motion"]["body"] for r in records if "motion" in r),
        "normalisation": "clip((raw - p1) / (p99 - p1), 0, 1); 0.5 when p99 <= p1",
        "definition": "see fantasytalking.face.motion (variance of size-normalised point sequences)",
    }
    write_json_atomic(out_dir / fmt.STATS, stats)
    return stats


class ShardWriter:
    """Writes samples into ``shard-NNNNNN.tar`` via a hidden temporary file, renamed when the shard is full or
    closed; ``on_commit(name, records)`` runs after each rename."""

    def __init__(
        self,
        out_dir: Path,
        next_index: int,
        max_count: int,
        max_bytes: int,
        on_commit: Callable[[str, list[dict[str, Any]]], None],
    ) -> None:
        self.out_dir = out_dir
        self.index = next_index
        self.max_count, self.max_bytes = max_count, max_bytes
        self.on_commit = on_commit
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._records: list[dict[str, Any]] = []
        self._bytes = 0
        self._writing = False

    @property
    def open_keys(self) -> set[str]:
        return {r["key"] for r in self._records}

    def add(self, key: str, members: dict[str, bytes], record: dict[str, Any]) -> None:
        if self._tar is None:
            self._tmp = self.out_dir / f".{fmt.shard_name(self.index)}.tmp"
            self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed in commit)
            self._records, self._bytes = [], 0
        self._writing = True  # an interruption inside this block leaves a torn member: never commit it
        now = int(time.time())
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), now, 0o644
            self._tar.addfile(info, _BytesReader(data))
            self._bytes += len(data) + 1024
        self._writing = False
        self._records.append({**record, "shard": fmt.shard_name(self.index)})
        if len(self._records) >= self.max_count or self._bytes >= self.max_bytes:
            self.commit()

    def commit(self) -> None:
        if self._tar is None or self._tmp is None:
            return
        if self._writing:
            self.abort()
            return
        self._tar.close()
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        name = fmt.shard_name(self.index)
        os.replace(self._tmp, self.out_dir / name)
        fsync_path(self.out_dir)
        records = self._records
        self._tar, self._tmp, self._records = None, None, []
        self.index += 1
        self.on_commit(name, records)

    def abort(self) -> None:
        if self._tar is not None:
            with contextlib.suppress(Exception):
                self._tar.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
        self._tar, self._tmp, self._records, self._writing = None, None, [], False


class _BytesReader:
    """Minimal file object over bytes for ``TarFile.addfile``."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(self._pos + n, len(self._view))
        out = bytes(self._view[self._pos : end])
        self._pos = end
        return out


def _manifest_from_shard(path: Path) -> list[dict[str, Any]]:
    """Manifest lines rebuilt from a finished shard's ``meta.json``/``motion.json`` (crash between the rename
    and the manifest append)."""
    metas: dict[str, dict[str, Any]] = {}
    motions: dict[str, dict[str, Any]] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if suffix in (fmt.META, fmt.MOTION):
                fh = tar.extractfile(member)
                if fh is not None:
                    (metas if suffix == fmt.META else motions)[key] = fmt.read_json_bytes(fh.read())
    return [
        {
            "key": key,
            "shard": path.name,
            "source": meta.get("source"),
            "clip": meta.get("clip"),
            "t0": meta.get("t0"),
            "num_frames": meta.get("num_frames"),
            "fps": meta.get("fps"),
            "motion": motions.get(key, {}),
        }
        for key, meta in metas.items()
    ]


# --------------------------------------------------------------------------------------------------- the run


@dataclass
class _PendingVideo:
    source: str
    record: dict[str, Any]
    rejections: list[dict[str, Any]]
    waiting: set[str]  # keys of its clips still in the open shard


class Preprocessor:
    """Turns videos into shards (see the module docstring); models are built once and reused for every video.

    Args:
        config: the settings.
        landmarker: a landmark backend (default: from ``config.landmarks`` / ``config.detector``).
        face_encoder: identity encoder (default: from ``config.face_encoder``).
        pose_source: body-joint source for the body intensity (default: :class:`HeadShoulderProxy`).
    """

    def __init__(
        self,
        config: PreprocessConfig,
        *,
        landmarker: LandmarkBackend | None = None,
        face_encoder: FaceEncoder | None = None,
        pose_source: PoseSource | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.landmarker = landmarker or make_landmarker(
            config.landmarks,  # type: ignore[arg-type]
            device=config.device,
            detector=config.detector,  # type: ignore[arg-type]
        )
        self.face_encoder = face_encoder or make_face_encoder(config.face_encoder, device=config.device)
        self.pose_source = pose_source or HeadShoulderProxy()
        self._wav2vec: Any = None
        self._vae: Any = None
        if config.cache_features is not None:
            from fantasytalking.loading import load_wav2vec2

            self._wav2vec = load_wav2vec2(config.cache_features, device=config.device)
        if config.cache_latents is not None:
            self._vae = _load_vae(config.cache_latents, config.device)

    # ---------------------------------------------------------------------------------------------- state

    def _load_state(self) -> None:
        out = self.config.out_dir
        for stale in out.glob(".shard-*.tar.tmp"):  # a crashed run's unfinished shard
            log.warning("removing unfinished shard %s left by an interrupted run", stale.name)
            stale.unlink()
        manifest = read_jsonl(out / fmt.MANIFEST, repair=True)
        in_manifest = {r.get("shard") for r in manifest}
        shards = sorted(p for p in out.glob(fmt.SHARD_GLOB) if fmt.shard_index(p.name) is not None)
        for shard in shards:
            if shard.name not in in_manifest:  # renamed, but the manifest append did not happen
                try:
                    rebuilt = _manifest_from_shard(shard)
                except (tarfile.TarError, OSError, ValueError) as err:
                    log.warning("shard %s is unreadable (%s); moving it aside", shard.name, _one_line(err))
                    shard.rename(shard.with_name(shard.name + ".corrupt"))
                    continue
                log.warning("adding %d clips of %s missing from the manifest", len(rebuilt), shard.name)
                append_jsonl(out / fmt.MANIFEST, rebuilt)
                manifest.extend(rebuilt)
        self._keys = {r["key"] for r in manifest if "key" in r}
        progress = read_jsonl(out / fmt.PROGRESS, repair=True)
        self._done = {r["source"] for r in progress if "source" in r}
        self._stems: dict[str, str] = {}
        for r in [*progress, *manifest]:
            if r.get("source") and r.get("stem"):
                self._stems.setdefault(r["source"], r["stem"])
        for r in manifest:  # stems of partly done videos: from their keys
            if r.get("source") and r.get("key") and r["source"] not in self._stems:
                self._stems[r["source"]] = r["key"].rsplit("_", 1)[0]
        self._rejected = {(r.get("source"), r.get("clip")) for r in read_jsonl(out / fmt.REJECTIONS, repair=True)}
        indices = [fmt.shard_index(p.name.removesuffix(".corrupt")) for p in out.glob("shard-*.tar*")]
        self._next_shard = max((i for i in indices if i is not None), default=-1) + 1
        self._pending: list[_PendingVideo] = []

    def _check_settings(self) -> None:
        path = self.config.out_dir / fmt.SETTINGS
        current = self.config.settings()
        if path.is_file():
            previous = json.loads(path.read_text(encoding="utf-8"))
            diff = [k for k in _FIXED_SETTINGS if previous.get(k) != current.get(k)]
            if diff:
                was = ", ".join(f"{k}={previous.get(k)!r}" for k in diff)
                raise InputError(
                    f"{self.config.out_dir} was written with {was}; rerun with those settings or use another --out"
                )
        else:
            write_json_atomic(path, current)

    def _on_commit(self, name: str, records: list[dict[str, Any]]) -> None:
        append_jsonl(self.config.out_dir / fmt.MANIFEST, records)
        committed = {r["key"] for r in records}
        self._keys |= committed
        self._report.shards_written.append(name)
        for pending in self._pending:
            pending.waiting -= committed
        self._flush_pending()

    def _flush_pending(self) -> None:
        while self._pending and not self._pending[0].waiting:
            done = self._pending.pop(0)
            append_jsonl(self.config.out_dir / fmt.REJECTIONS, done.rejections)
            append_jsonl(self.config.out_dir / fmt.PROGRESS, [done.record])
            self._done.add(done.source)

    # ---------------------------------------------------------------------------------------------- run

    def run(self, inputs: Sequence[str | os.PathLike[str]]) -> PreprocessReport:
        """Process every input video; returns what this run did. ``stats.json`` is rewritten at the end."""
        cfg = self.config
        videos = find_videos(inputs)
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        self._report = PreprocessReport(out_dir=cfg.out_dir)
        with _folder_lock(cfg.out_dir):
            self._check_settings()
            self._load_state()
            writer = ShardWriter(
                cfg.out_dir, self._next_shard, cfg.clips_per_shard, int(cfg.max_shard_mb * 2**20), self._on_commit
            )
            try:
                with tempfile.TemporaryDirectory(prefix="ft-preprocess-") as tmp:
                    for video in videos:
                        self._report.videos_seen += 1
                        source = str(video)
                        if source in self._done:
                            self._report.videos_skipped += 1
                            continue
                        self._process_video(video, writer, Path(tmp))
            finally:
                writer.commit()  # a finished sample is whole: keep it (a torn one is dropped)
                self._flush_pending()
                write_stats(cfg.out_dir)
        log.info("%s", self._report.summary())
        return self._report

    def _stem_for(self, source: str, name: str) -> str:
        if source not in self._stems:
            self._stems[source] = fmt.unique_stem(name, source, set(self._stems.values()))
        return self._stems[source]

    def _process_video(self, video: Path, writer: ShardWriter, tmp: Path) -> None:
        source = str(video)
        stem = self._stem_for(source, video.stem)
        rejections: list[dict[str, Any]] = []
        written: list[str] = []
        clips_rejected = 0

        def reject(reason: str, detail: str, clip: int | None = None, key: str | None = None, t0: float | None = None):
            nonlocal clips_rejected
            self._report.reasons[reason] = self._report.reasons.get(reason, 0) + 1
            if clip is not None:
                clips_rejected += 1
            if (source, clip) not in self._rejected:
                self._rejected.add((source, clip))
                rejections.append(
                    {"source": source, "clip": clip, "key": key, "t0": t0, "reason": reason, "detail": detail}
                )
            log.info("%s%s: rejected (%s): %s", video.name, "" if clip is None else f" clip {clip}", reason, detail)

        video_level: _Reject | None = None
        try:
            video_level = self._clips_of(video, stem, writer, tmp, reject, written)
        except _Reject as rej:
            video_level = rej
        except Exception as err:  # one bad video must not end a long run: record it and go on
            log.warning("%s: unexpected error", video, exc_info=True)
            video_level = _Reject("error", f"{type(err).__name__}: {_one_line(err)}")
        if video_level is not None:
            reject(video_level.reason, video_level.detail)
        status = "done" if written else "rejected"
        if written:
            self._report.videos_done += 1
        else:
            self._report.videos_rejected += 1
        self._report.clips_rejected += clips_rejected
        record = {"source": source, "stem": stem, "status": status, "clips": len(written),
                  "rejected_clips": clips_rejected, "time": time.time()}  # fmt: skip
        self._pending.append(_PendingVideo(source, record, rejections, set(written) & writer.open_keys))
        self._flush_pending()
        log.info("%s: %d clips written, %d rejected", video.name, len(written), clips_rejected)

    def _clips_of(
        self,
        video: Path,
        stem: str,
        writer: ShardWriter,
        tmp: Path,
        reject: Callable[..., None],
        written: list[str],
    ) -> _Reject | None:
        """Cut, check and write the clips of one video, appending their keys to ``written`` as they go (so an
        error part-way keeps the record of what was written); returns the video-level problem, if any."""
        cfg = self.config
        assert cfg.stride is not None
        if not video.exists():
            raise _Reject("not_found", "the file does not exist")
        stream = _VideoStream(video, cfg.fps, cfg.work_max_side)
        try:
            try:
                audio, _ = load_audio(video, fmt.AUDIO_SAMPLE_RATE)
            except InputError as err:
                raise _Reject("no_audio", str(err)) from None
            need = cfg.num_frames / cfg.fps
            if audio.size / fmt.AUDIO_SAMPLE_RATE < need:
                raise _Reject("too_short", f"audio is {audio.size / fmt.AUDIO_SAMPLE_RATE:.2f} s; a clip needs "
                              f"{need:.2f} s ({cfg.num_frames} frames at {cfg.fps:g} fps)")  # fmt: skip
            prompt = _prompt_for(video, cfg.prompt)
            buffer: list[np.ndarray] = []
            first = 0  # clip-frame index of buffer[0]
            clip = 0
            considered = 0
            for k, frame in enumerate(stream.frames()):
                start = clip * cfg.stride
                if k < start:
                    continue  # between clips (stride > num_frames)
                if not buffer:
                    first = k
                buffer.append(frame)
                if k < start + cfg.num_frames - 1:
                    continue
                # buffer now holds clip frames [start, start + N)
                frames = np.stack(buffer[start - first : start - first + cfg.num_frames])
                t0 = start / cfg.fps
                # the clip's audio on the container timeline (t0 counts from the first video frame)
                a0, alen = fmt.audio_span(t0 + stream.av_offset, cfg.num_frames, cfg.fps)
                if a0 + alen > audio.size:
                    break  # the audio ends before this clip does
                key = fmt.clip_key(stem, clip)
                considered += 1
                if a0 < 0:
                    reject("no_audio", f"the audio starts {-a0 / fmt.AUDIO_SAMPLE_RATE:.2f} s after this clip does",
                           clip=clip, key=key, t0=t0)  # fmt: skip
                elif key in self._keys or key in writer.open_keys:
                    self._report.clips_already_present += 1
                    written.append(key)
                else:
                    try:
                        members, record = self._make_clip(frames, audio[a0 : a0 + alen], video, stream, key, clip,
                                                          t0, a0, prompt, tmp)  # fmt: skip
                    except _Reject as rej:
                        reject(rej.reason, rej.detail, clip=clip, key=key, t0=t0)
                    else:
                        writer.add(key, members, record)
                        written.append(key)
                        self._report.clips_written += 1
                clip += 1
                if cfg.max_clips_per_video is not None and clip >= cfg.max_clips_per_video:
                    break
                next_start = clip * cfg.stride
                buffer = buffer[max(0, next_start - first) :]
                first = max(first, next_start)
            if stream.decode_error is not None:
                return _Reject("decode_error", stream.decode_error)
            if considered == 0:
                return _Reject(
                    "too_short",
                    f"the video gives {stream.frames_out} frames at {cfg.fps:g} fps; a clip needs {cfg.num_frames} "
                    f"({need:.2f} s)",
                )
            return None
        finally:
            stream.close()

    def _make_clip(
        self,
        frames: np.ndarray,
        audio: np.ndarray,
        video: Path,
        stream: _VideoStream,
        key: str,
        clip: int,
        t0: float,
        a0: int,
        prompt: str,
        tmp: Path,
    ) -> tuple[dict[str, bytes], dict[str, Any]]:
        """One sample's members and manifest record from source frames ``uint8 (N, H, W, 3)`` and its audio."""
        cfg = self.config
        n, h, w = frames.shape[:3]
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if rms < cfg.min_audio_rms:
            raise _Reject("silent", f"audio RMS {rms:.2e} < {cfg.min_audio_rms:g}")
        try:
            track = track_face(frames, self.landmarker, detect_every=cfg.detect_every)
        except NoFaceError as err:
            raise _Reject("no_face", str(err)) from None
        if track.missing_fraction > cfg.max_missing:
            missed = round(track.missing_fraction * n)
            raise _Reject("face_lost", f"face missed in {missed} of {n} frames (max {cfg.max_missing:.0%})")
        face_px = float(np.median(track.face_sizes()))
        if face_px < cfg.min_face_px:
            raise _Reject("face_too_small", f"face is {face_px:.0f} px, below --min-face-px {cfg.min_face_px:g}")
        if track.second_face_ratio >= cfg.max_second_face:
            raise _Reject("multiple_faces", f"a second face {track.second_face_ratio:.0%} the size of the first")

        box = clip_crop_box(track.landmarks, (h, w), scale=cfg.crop_scale)
        clip_frames = crop_frames(frames, box, cfg.size)  # (N, S, S, 3) uint8
        landmarks = landmarks_to_crop(track.landmarks, box, cfg.size)  # (N, 68, 2) in clip pixels
        masks = lip_mask(landmarks, cfg.size, cfg.size, margin=cfg.lip_margin)  # (N, S, S) uint8
        face = align_face(frames[0], track.landmarks[0], cfg.face_size)  # (F, F, 3) uint8
        embedding = np.asarray(self.face_encoder.encode(frames[0], track.landmarks[0]), dtype=np.float32)  # (E,)
        joints = self.pose_source.joints(frames, track.landmarks, track.boxes)  # (N, J, 2)
        motion = {"face": facial_intensity(track.landmarks), "body": body_intensity(joints)}

        mp4 = tmp / f"{key}.mp4"
        write_video(mp4, clip_frames, cfg.fps, crf=cfg.crf, overwrite=True)
        video_bytes = mp4.read_bytes()
        mp4.unlink()

        members: dict[str, bytes] = {
            fmt.VIDEO: video_bytes,
            fmt.AUDIO: fmt.to_npy(audio.astype(np.float32)),
            fmt.LANDMARKS: fmt.to_npy(landmarks.astype(np.float32)),
            fmt.LIP_MASK: fmt.to_npy(fmt.pack_lip_mask(masks)),
            fmt.FACE: fmt.encode_png(face),
            fmt.FACE_EMBEDDING: fmt.to_npy(embedding),
            fmt.MOTION: json.dumps(motion).encode("utf-8"),
        }
        wav2vec_meta = latents_meta = None
        if self._wav2vec is not None:
            feats = _wav2vec_features(self._wav2vec, audio)  # (L, A) float16
            members[fmt.WAV2VEC] = fmt.to_npy(feats)
            wav2vec_meta = {"shape": list(feats.shape), "dtype": "float16", "model": str(cfg.cache_features)}
        if self._vae is not None:
            lat = _vae_latents(self._vae, clip_frames)  # (16, F, h, w) float16
            members[fmt.LATENTS] = fmt.to_npy(lat)
            latents_meta = {"shape": list(lat.shape), "dtype": "float16", "vae": str(cfg.cache_latents),
                            "normalised": "(z - latents_mean) / latents_std, posterior mode"}  # fmt: skip
        meta = {
            "format_version": fmt.FORMAT_VERSION,
            "key": key,
            "source": str(video),
            "clip": clip,
            "t0": t0,
            "fps": cfg.fps,
            "num_frames": n,
            "size": cfg.size,
            "audio_sample_rate": fmt.AUDIO_SAMPLE_RATE,
            "audio_samples": int(audio.size),
            "audio_start_sample": a0,
            "av_offset": stream.av_offset,
            "source_fps": stream.source_fps,
            "source_size": [h, w],
            "crop_box": box.as_list(),
            "landmark_backend": track.backend,
            "face_missing_fraction": track.missing_fraction,
            "face_size": cfg.face_size,
            "face_encoder": getattr(self.face_encoder, "name", type(self.face_encoder).__name__),
            "embedding_dim": int(embedding.shape[0]),
            "lip_mask_shape": [n, cfg.size, cfg.size],
            "lip_margin": cfg.lip_margin,
            "pose_source": getattr(self.pose_source, "name", type(self.pose_source).__name__),
            "prompt": prompt,
            "wav2vec": wav2vec_meta,
            "latents": latents_meta,
        }
        members[fmt.META] = json.dumps(meta, ensure_ascii=False, default=json_default).encode("utf-8")
        record = {"key": key, "source": str(video), "stem": key.rsplit("_", 1)[0], "clip": clip, "t0": t0,
                  "num_frames": n, "fps": cfg.fps, "motion": motion}  # fmt: skip
        return members, record


def _prompt_for(video: Path, default: str) -> str:
    """The text of ``<video stem>.txt`` next to the video, else ``default``."""
    sidecar = video.with_suffix(".txt")
    if sidecar.is_file():
        text = " ".join(sidecar.read_text(encoding="utf-8", errors="replace").split())
        if text:
            return text
    return default


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder/.preprocess.lock`` (POSIX); another run on the same folder is refused."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(folder / ".preprocess.lock", "w") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another preprocess run is writing {folder}; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------- feature caches


def _load_vae(path: Path, device: str) -> Any:
    """The Wan VAE from a Wan2.1 folder: ``<path>/vae`` (diffusers layout) or ``Wan2.1_VAE.pth`` (original)."""
    import torch

    from fantasytalking.loading import load_wan_vae

    target = path / "vae" if (path / "vae" / "config.json").is_file() else path
    return load_wan_vae(target, dtype=torch.float32, device=device)


def _wav2vec_features(model_and_extractor: Any, audio: np.ndarray) -> np.ndarray:
    """wav2vec2 ``last_hidden_state`` ``float16 (L, A)`` of one clip's 16 kHz audio ``(T,)``."""
    import torch

    model, extractor = model_and_extractor
    inputs = extractor(audio, sampling_rate=fmt.AUDIO_SAMPLE_RATE, return_tensors="pt")
    param = next(model.parameters())
    with torch.no_grad():
        hidden = model(inputs.input_values.to(param.device, param.dtype)).last_hidden_state  # (1, L, A)
    return hidden[0].float().cpu().numpy().astype(np.float16)


def _vae_latents(vae: Any, frames: np.ndarray) -> np.ndarray:
    """Normalised Wan VAE latents ``float16 (16, F, S/8, S/8)`` of clip frames ``uint8 (N, S, S, 3)``."""
    import torch

    param = next(vae.parameters())
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].to(param.device, torch.float32) / 127.5 - 1.0  # (1,3,N,S,S)
    with torch.no_grad():
        z = vae.encode(x.to(param.dtype)).latent_dist.mode().float()  # (1, 16, F, S/8, S/8)
    cfg = vae.config
    mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=z.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=z.device).view(1, -1, 1, 1, 1)
    return ((z - mean) / std)[0].cpu().numpy().astype(np.float16)


# --------------------------------------------------------------------------------------------------- API + CLI


def preprocess(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    landmarker: LandmarkBackend | None = None,
    face_encoder: FaceEncoder | None = None,
    pose_source: PoseSource | None = None,
    **settings: Any,
) -> PreprocessReport:
    """Preprocess videos into ``out_dir`` (see :class:`PreprocessConfig` for ``settings``)."""
    config = PreprocessConfig(out_dir=Path(out_dir), **settings)
    runner = Preprocessor(config, landmarker=landmarker, face_encoder=face_encoder, pose_source=pose_source)
    return runner.run(inputs)


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the preprocess options to ``parser`` (for the ``fantasytalking preprocess`` subcommand)."""
    d = PreprocessConfig(out_dir=Path("."))
    p = parser
    p.add_argument(
        "inputs",
        nargs="+",
        help="video files, folders of videos (searched recursively for "
        f"{', '.join(sorted(VIDEO_SUFFIXES))}) and/or .txt lists of video paths, one a line",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder for the shards, manifest.jsonl, "
        "rejections.jsonl and stats.json; re-running with the same folder resumes",
    )
    g = p.add_argument_group("clips")
    g.add_argument("--fps", type=float, default=d.fps, help="clip frame rate (FantasyTalking was trained at 23)")
    g.add_argument(
        "--num-frames", type=int, default=d.num_frames, help="frames per clip, 4k+1 (81 = the model's longest clip)"
    )
    g.add_argument("--size", type=int, default=d.size, help="clip side in pixels, a multiple of 16")
    g.add_argument(
        "--stride",
        type=int,
        default=None,
        help="clip frames between clip starts (default: "
        "--num-frames, i.e. back-to-back clips; smaller overlaps clips, larger skips frames)",
    )
    g.add_argument("--max-clips-per-video", type=int, default=None, help="stop after this many clips of a video")
    g.add_argument(
        "--prompt",
        default=d.prompt,
        help="text prompt stored with each clip when the video has no <stem>.txt next to it",
    )
    g.add_argument("--crf", type=int, default=d.crf, help="H.264 quality of the stored clips (lower is better)")
    g.add_argument(
        "--work-max-side",
        type=int,
        default=d.work_max_side,
        help="downscale source frames whose longest side exceeds this before any processing (bounds memory; 0 = never)",
    )
    f = p.add_argument_group("face")
    f.add_argument(
        "--landmarks",
        choices=("auto", "dlib", "face-alignment"),
        default=d.landmarks,
        help="68-point landmark backend: face-alignment (S3FD + FAN; downloads its weights if "
        "missing), dlib (offline), or auto = face-alignment when its weights are already in the torch "
        "hub cache, else dlib",
    )
    f.add_argument("--detector", choices=("hog", "cnn"), default=d.detector, help="dlib face detector")
    f.add_argument(
        "--detect-every",
        type=int,
        default=d.detect_every,
        help="run the face detector on every k-th frame only (landmarks still on every frame)",
    )
    f.add_argument("--crop-scale", type=float, default=d.crop_scale, help="clip crop side in face sizes")
    f.add_argument(
        "--lip-margin", type=float, default=d.lip_margin, help="lip-mask dilation as a fraction of the mouth width"
    )
    f.add_argument(
        "--face-size",
        type=int,
        default=d.face_size,
        help="side of the aligned reference face face.png (112 = ArcFace input; 224 keeps more detail)",
    )
    f.add_argument(
        "--face-encoder",
        default=d.face_encoder,
        help="identity embedding: 'dlib' (128-d, offline) "
        "or 'arcface:/path/model.pt' (a TorchScript or pickled ArcFace module you supply)",
    )
    f.add_argument(
        "--max-missing",
        type=float,
        default=d.max_missing,
        help="reject a clip when the detector misses the face in more than this fraction of its frames",
    )
    f.add_argument(
        "--min-face-px",
        type=float,
        default=d.min_face_px,
        help="reject a clip whose face (landmark box, source pixels) is smaller than this",
    )
    f.add_argument(
        "--max-second-face",
        type=float,
        default=d.max_second_face,
        help="reject a clip showing another face at least this fraction of the tracked face's area",
    )
    f.add_argument(
        "--min-audio-rms",
        type=float,
        default=d.min_audio_rms,
        help="reject a clip whose audio RMS is below this (silence)",
    )
    o = p.add_argument_group("output and caches")
    o.add_argument("--clips-per-shard", type=int, default=d.clips_per_shard, help="clips per shard at most")
    o.add_argument("--max-shard-mb", type=float, default=d.max_shard_mb, help="shard size limit in MiB")
    o.add_argument(
        "--cache-features",
        type=Path,
        default=None,
        metavar="WAV2VEC_DIR",
        help="also store wav2vec2 last_hidden_state features (wav2vec.npy, float16) computed with this model folder",
    )
    o.add_argument(
        "--cache-latents",
        type=Path,
        default=None,
        metavar="WAN_DIR",
        help="also store Wan VAE "
        "latents (latents.npy, float16, normalised) computed with the VAE of this Wan2.1 folder",
    )
    o.add_argument(
        "--device", default=d.device, help="torch device for the face-alignment, wav2vec2 and VAE models (e.g. cuda)"
    )
    o.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")
    return parser


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """A :class:`PreprocessConfig` from parsed :func:`add_preprocess_arguments` options."""
    return PreprocessConfig(
        out_dir=args.out, fps=args.fps, num_frames=args.num_frames, size=args.size, stride=args.stride,
        max_clips_per_video=args.max_clips_per_video, landmarks=args.landmarks, detector=args.detector,
        detect_every=args.detect_every, crop_scale=args.crop_scale, lip_margin=args.lip_margin,
        face_size=args.face_size, face_encoder=args.face_encoder, max_missing=args.max_missing,
        min_face_px=args.min_face_px, max_second_face=args.max_second_face, min_audio_rms=args.min_audio_rms,
        clips_per_shard=args.clips_per_shard, max_shard_mb=args.max_shard_mb,
        work_max_side=args.work_max_side or None, prompt=args.prompt, cache_features=args.cache_features,
        cache_latents=args.cache_latents, device=args.device, crf=args.crf,
    )  # fmt: skip


def preprocess_main(argv: Sequence[str] | None = None) -> int:
    """``fantasytalking preprocess``: returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = argparse.ArgumentParser(
        prog="fantasytalking preprocess",
        description="Cut talking videos with sound into WebDataset shards of face-centred clips for training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    args = add_preprocess_arguments(parser).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        report = preprocess_from_args(args)
    except FantasyTalkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished shards were kept, re-run the same command to resume", file=sys.stderr)
        return 130
    print(report.summary())
    return 0


def preprocess_from_args(args: argparse.Namespace) -> PreprocessReport:
    """Run preprocessing from parsed options (what the CLI subcommand calls)."""
    return Preprocessor(config_from_args(args)).run(args.inputs)
