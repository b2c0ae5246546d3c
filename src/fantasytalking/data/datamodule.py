"""WebDataset ``LightningDataModule`` over preprocessed clip shards (format: :mod:`fantasytalking.data.format`).

::

    from fantasytalking.data import TalkingClipDataModule

    dm = TalkingClipDataModule("shards/", batch_size=2, num_workers=4, val_fraction=0.05)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch["video"].shape  # (B, 3, N, H, W) in [-1, 1]

A collated batch is a dict:

=====================  ==========================================================================================
``video``              float ``(B, 3, N, H, W)`` in [-1, 1]
``audio``              float ``(B, T)`` 16 kHz, ``T = round(N * 16000 / fps)``
``lip_mask``           float ``(B, 1, N, H, W)`` in {0, 1}
``landmarks``          float ``(B, N, 68, 2)`` pixel ``(x, y)`` of the clip frames
``face``               float ``(B, 3, S, S)`` in [-1, 1], the aligned reference face
``face_embedding``     float ``(B, E)``
``motion``             float ``(B, 2)``: (face, body) raw intensities normalised by the dataset statistics,
                       ``clip((raw - p1) / (p99 - p1), 0, 1)``
``audio_features``     float ``(B, L, A)`` cached wav2vec2 features (only when asked for)
``latents``            float ``(B, 16, F, H/8, W/8)`` cached normalised VAE latents (only when asked for)
``prompt``             ``list[str]`` (``meta.json``'s prompt, default "A person is talking.")
``key``                ``list[str]``
=====================  ==========================================================================================

Shards are split per node (``wds.split_by_node``) and per DataLoader worker (``wds.split_by_worker``) after a
per-epoch shuffle of the shard list that every rank computes identically from ``seed`` and the epoch; samples are
then shuffled in a buffer. The validation split is by shard and deterministic (see :func:`split_shards`).

A corrupt sample (unreadable tar member, truncated shard, missing member, undecodable mp4, wrong shape) is never
silently dropped and never ends training: it is logged as a warning naming the shard, the key and the reason,
and counted in :attr:`TalkingClipDataModule.corrupt_samples` (shared across DataLoader worker processes). The
counter counts events: a truncated shard usually gives one read error plus one incomplete sample.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from fantasytalking.data import format as fmt
from fantasytalking.errors import InputError
from fantasytalking.face.motion import normalise_intensity

__all__ = [
    "ALL_FIELDS",
    "DEFAULT_FIELDS",
    "CorruptCounter",
    "TalkingClipDataModule",
    "collate_clips",
    "decode_clip",
    "list_shards",
    "read_members",
    "split_shards",
]

log = logging.getLogger("fantasytalking.data")

#: Fields loaded by default (``prompt`` and ``key`` always come along).
DEFAULT_FIELDS = ("video", "audio", "lip_mask", "landmarks", "face", "face_embedding", "motion")
#: Every loadable field; ``audio_features`` and ``latents`` need shards written with the caches.
ALL_FIELDS = (*DEFAULT_FIELDS, "audio_features", "latents")
_MEMBER_OF = {
    "video": fmt.VIDEO,
    "audio": fmt.AUDIO,
    "lip_mask": fmt.LIP_MASK,
    "landmarks": fmt.LANDMARKS,
    "face": fmt.FACE,
    "face_embedding": fmt.FACE_EMBEDDING,
    "motion": fmt.MOTION,
    "audio_features": fmt.WAV2VEC,
    "latents": fmt.LATENTS,
}


class _CorruptSample(Exception):
    """A sample that cannot be used; the message is the reason."""


# --------------------------------------------------------------------------------------------------- shards


def list_shards(shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Shard paths from a folder (its ``shard-*.tar``), a glob pattern, a file, or a list of those; sorted, unique."""
    items = [shards] if isinstance(shards, str | os.PathLike) else list(shards)
    out: list[str] = []
    for item in items:
        s = os.fspath(item)
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(str(q) for q in p.glob(fmt.SHARD_GLOB) if fmt.shard_index(q.name) is not None)
            if not found:
                raise InputError(f"no shard-*.tar files in {p}; run `fantasytalking preprocess` into it first")
            out.extend(found)
        elif any(c in s for c in "*?["):
            found = sorted(glob.glob(os.path.expanduser(s)))
            if not found:
                raise InputError(f"no shards match {s}; check the pattern")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            raise InputError(f"shard path not found: {p}; pass a shard folder, a glob or .tar files")
    return sorted(dict.fromkeys(out))


def read_members(
    shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], suffixes: Sequence[str]
) -> dict[str, dict[str, bytes]]:
    """The raw bytes of some members of every sample, straight from the tar files (no decoding, no shuffling):
    ``key -> {suffix: bytes}`` for the suffixes asked for (e.g. ``format.FACE_EMBEDDING``) that the sample has."""
    import tarfile

    wanted = set(suffixes)
    out: dict[str, dict[str, bytes]] = {}
    for path in list_shards(shards):
        with tarfile.open(path, "r") as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                if suffix in wanted and (fh := tar.extractfile(member)) is not None:
                    out.setdefault(key, {})[suffix] = fh.read()
    return out


def split_shards(
    shards: Sequence[str], *, val_fraction: float = 0.0, val_shards: Sequence[str] | None = None, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``(train, val)`` shard lists.

    Explicit ``val_shards`` are taken out of the training list. Otherwise ``round(val_fraction * n)`` shards (at
    least one when the fraction is positive) go to validation: those ranking first by ``sha1(f"{seed}:{name}")``,
    so the split depends only on the shard names and the seed, never on the order they were listed in.
    """
    shards = sorted(shards)
    if val_shards:
        val = sorted(dict.fromkeys(val_shards))
        names = {Path(v).name for v in val}
        train = [s for s in shards if s not in val and Path(s).name not in names]
        return train, val
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return list(shards), []
    n_val = max(1, round(val_fraction * len(shards)))
    if n_val >= len(shards):
        raise InputError(
            f"a validation split by shard needs at least 2 shards, found {len(shards)}; write smaller shards "
            "(--clips-per-shard) or set val_fraction=0"
        )
    ranked = sorted(shards, key=lambda s: hashlib.sha1(f"{seed}:{Path(s).name}".encode()).hexdigest())
    val = set(ranked[:n_val])
    return [s for s in shards if s not in val], sorted(val)


class _EpochShardList(IterableDataset):
    """``dict(url=...)`` for each shard; the order is a fresh shuffle per epoch, identical on every rank and
    worker (seeded by ``seed`` and the shared epoch counter), so node/worker splitting partitions it exactly.
    With ``resampled``, shards are drawn with replacement forever (seeded per rank and worker)."""

    def __init__(self, urls: Sequence[str], seed: int, shuffle: bool, epoch: Any, resampled: bool = False) -> None:
        super().__init__()
        self.urls = list(urls)
        self.seed, self.shuffle, self.epoch, self.resampled = seed, shuffle, epoch, resampled

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = int(self.epoch.value)
        if self.resampled:
            rank, _, worker, _ = wds.utils.pytorch_worker_info()
            rng = random.Random(f"{self.seed}:{epoch}:{rank}:{worker}")
            while True:
                yield {"url": rng.choice(self.urls)}
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(urls)
        for url in urls:
            yield {"url": url}


class _EpochLoader(DataLoader):
    """A DataLoader that advances the shared epoch counter each time a pass starts (before workers start)."""

    def __init__(self, *args: Any, epoch: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = epoch
        self._passes = 0

    def __iter__(self) -> Any:
        with self._epoch.get_lock():
            self._epoch.value = self._passes
        self._passes += 1
        return super().__iter__()


# --------------------------------------------------------------------------------------------------- counting


class CorruptCounter:
    """A process-shared count of corrupt samples, with the warning logged where it happens."""

    def __init__(self) -> None:
        self._value = multiprocessing.Value("q", 0)
        self._last: tuple[str, str] | None = None  # this process's previous read error

    @property
    def value(self) -> int:
        return int(self._value.value)

    def add(self, message: str) -> None:
        with self._value.get_lock():
            self._value.value += 1
        log.warning("corrupt sample skipped and counted: %s", message)

    def handler(self, exn: BaseException) -> bool:
        """WebDataset exception handler: count, log, carry on.

        WebDataset appends the stream and the shard url to ``exn.args`` as the error travels up; the same tar
        error often surfaces twice in a row (member read, then the next header), and is counted once.
        """
        args = getattr(exn, "args", ())
        first = str(args[0]) if args else str(exn)
        reason = " ".join(first.split(" @ ")[0].split()) or type(exn).__name__
        url = next((a for a in reversed(args[1:]) if isinstance(a, str)), None)
        if url is None:
            found = re.search(r"name='([^']+)'", first)
            url = found.group(1) if found else "a shard"
        last, self._last = self._last, (url, reason)
        if last == self._last:
            return True
        self.add(f"read error in {url}: {type(exn).__name__}: {reason}")
        return True


# --------------------------------------------------------------------------------------------------- decoding


def _member(raw: Mapping[str, Any], suffix: str) -> bytes:
    data = raw.get(suffix)
    if not isinstance(data, bytes | bytearray) or len(data) == 0:
        raise _CorruptSample(f"missing or empty member {suffix}")
    return bytes(data)


def _npy(raw: Mapping[str, Any], suffix: str) -> np.ndarray:
    try:
        return fmt.from_npy(_member(raw, suffix))
    except _CorruptSample:
        raise
    except Exception as err:
        raise _CorruptSample(f"{suffix} is not a readable .npy ({err})") from None


def decode_clip(
    raw: Mapping[str, Any],
    *,
    fields: Sequence[str] = DEFAULT_FIELDS,
    num_frames: int | None = None,
    fps: float | None = None,
    motion_stats: Mapping[str, Any] | None = None,
    start: int | None = 0,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """One raw WebDataset sample (member suffix -> bytes) -> a dict of tensors (shapes as in the module doc,
    without the batch axis).

    Args:
        fields: which fields to decode (see :data:`ALL_FIELDS`).
        num_frames: frames to keep (default: all the clip has); a shorter window starts at ``start``, or at a
            random frame drawn from ``rng`` when ``start`` is None. Audio (and cached features) are cut to match.
        fps: expected clip frame rate (checked against ``meta.json`` when given).
        motion_stats: ``stats.json`` content, needed for ``motion``.

    Raises:
        _CorruptSample: anything wrong with the sample (the data module counts and logs it).
    """
    key = str(raw.get("__key__", "?"))
    try:
        meta = fmt.read_json_bytes(_member(raw, fmt.META))
        stored = int(meta["num_frames"])
        clip_fps = float(meta["fps"])
        size = int(meta["size"])
    except _CorruptSample:
        raise
    except Exception as err:
        raise _CorruptSample(f"meta.json unreadable ({err})") from None
    if fps is not None and abs(clip_fps - fps) > 1e-3:
        raise _CorruptSample(f"clip is at {clip_fps:g} fps, expected {fps:g}")
    n = stored if num_frames is None else int(num_frames)
    if n > stored:
        raise _CorruptSample(f"clip has {stored} frames, {n} requested")
    if start is None:
        s = (rng or random).randint(0, stored - n)
    else:
        s = int(start)
        if s + n > stored:
            raise _CorruptSample(f"window [{s}, {s + n}) is outside the clip's {stored} frames")
    t_len = round(n * fmt.AUDIO_SAMPLE_RATE / clip_fps)
    out: dict[str, Any] = {"key": key, "prompt": str(meta.get("prompt") or fmt.DEFAULT_PROMPT)}

    if "video" in fields:
        try:
            frames = fmt.decode_mp4(_member(raw, fmt.VIDEO))  # (N, H, W, 3) uint8
        except _CorruptSample:
            raise
        except Exception as err:
            raise _CorruptSample(f"video.mp4 does not decode ({' '.join(str(err).split())})") from None
        if frames.shape[0] != stored or frames.shape[1:3] != (size, size):
            raise _CorruptSample(f"video.mp4 is {frames.shape[:3]}, meta.json says ({stored}, {size}, {size})")
        video = torch.from_numpy(np.ascontiguousarray(frames[s : s + n])).permute(3, 0, 1, 2)  # (3, n, H, W)
        out["video"] = video.float() / 127.5 - 1.0
    if "audio" in fields:
        audio = _npy(raw, fmt.AUDIO).astype(np.float32).reshape(-1)  # (T_stored,)
        a0 = round(s * fmt.AUDIO_SAMPLE_RATE / clip_fps)
        cut = audio[a0 : a0 + t_len]
        if cut.size < t_len - 1:
            raise _CorruptSample(f"audio.npy has {audio.size} samples, too few for {n} frames")
        out["audio"] = torch.from_numpy(np.pad(cut, (0, t_len - cut.size)))  # (T,)
    if "lip_mask" in fields:
        try:
            mask = fmt.unpack_lip_mask(_npy(raw, fmt.LIP_MASK), meta["lip_mask_shape"])  # (N, H, W)
        except (ValueError, KeyError) as err:
            raise _CorruptSample(f"lip_mask.npy: {err}") from None
        out["lip_mask"] = torch.from_numpy(mask[s : s + n]).float()[None]  # (1, n, H, W)
    if "landmarks" in fields:
        lm = _npy(raw, fmt.LANDMARKS)
        if lm.shape != (stored, 68, 2):
            raise _CorruptSample(f"landmarks.npy has shape {lm.shape}, expected ({stored}, 68, 2)")
        out["landmarks"] = torch.from_numpy(lm[s : s + n].astype(np.float32))  # (n, 68, 2)
    if "face" in fields:
        try:
            face = fmt.decode_png(_member(raw, fmt.FACE))  # (S, S, 3)
        except _CorruptSample:
            raise
        except Exception as err:
            raise _CorruptSample(f"face.png does not decode ({err})") from None
        out["face"] = torch.from_numpy(np.array(face)).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, S, S)
    if "face_embedding" in fields:
        emb = _npy(raw, fmt.FACE_EMBEDDING)
        if emb.ndim != 1:
            raise _CorruptSample(f"face_embedding.npy has shape {emb.shape}, expected (E,)")
        out["face_embedding"] = torch.from_numpy(emb.astype(np.float32))  # (E,)
    if "motion" in fields:
        if motion_stats is None:
            raise _CorruptSample("no motion statistics to normalise with")
        try:
            motion = fmt.read_json_bytes(_member(raw, fmt.MOTION))
            values = [normalise_intensity(float(motion[k]), motion_stats[k]) for k in ("face", "body")]
        except _CorruptSample:
            raise
        except Exception as err:
            raise _CorruptSample(f"motion.json unusable ({err})") from None
        out["motion"] = torch.tensor(values, dtype=torch.float32)  # (2,)
    if "audio_features" in fields:
        feats = _npy(raw, fmt.WAV2VEC)  # (L_stored, A) float16
        if feats.ndim != 2:
            raise _CorruptSample(f"wav2vec.npy has shape {feats.shape}, expected (L, A)")
        if n != stored:  # cut proportionally: wav2vec2 gives a fixed number of tokens per second
            per_frame = feats.shape[0] / stored
            f0, flen = round(s * per_frame), round(n * per_frame)
            feats = feats[f0 : f0 + flen]
        out["audio_features"] = torch.from_numpy(feats.astype(np.float32))  # (L, A)
    if "latents" in fields:
        if n != stored or s != 0:
            raise _CorruptSample(f"cached latents cover all {stored} frames; they cannot be cut to {n} frames")
        lat = _npy(raw, fmt.LATENTS)  # (16, F, h, w) float16
        expected = (fmt.latent_frames(stored), size // 8, size // 8)
        if lat.ndim != 4 or lat.shape[1:] != expected:
            raise _CorruptSample(f"latents.npy has shape {lat.shape}, expected (C, *{expected})")
        out["latents"] = torch.from_numpy(lat.astype(np.float32))
    return out


def collate_clips(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack tensors along a new batch axis; ``prompt`` and ``key`` become lists."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        out[name] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return out


class _ClipStages:
    """The per-sample pipeline stages (picklable, so DataLoader workers can be spawned)."""

    def __init__(
        self,
        counter: CorruptCounter,
        *,
        fields: Sequence[str],
        num_frames: int | None,
        fps: float | None,
        motion_stats: Mapping[str, Any] | None,
        random_window: bool,
        shuffle_buffer: int,
        seed: int,
        epoch: Any,
    ) -> None:
        self.counter = counter
        self.fields, self.num_frames, self.fps = tuple(fields), num_frames, fps
        self.motion_stats = motion_stats
        self.random_window, self.shuffle_buffer, self.seed, self.epoch = random_window, shuffle_buffer, seed, epoch

    def _rng(self, salt: str) -> random.Random:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        return random.Random(f"{self.seed}:{int(self.epoch.value)}:{rank}:{worker}:{salt}")

    def shuffle(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Shuffle raw samples through a buffer (cheap: they are still bytes)."""
        if self.shuffle_buffer <= 1:
            yield from src
            return
        rng, buf = self._rng("shuffle"), []
        for sample in src:
            buf.append(sample)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def decode(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rng = self._rng("window")
        for raw in src:
            key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
            try:
                yield decode_clip(
                    raw, fields=self.fields, num_frames=self.num_frames, fps=self.fps,
                    motion_stats=self.motion_stats, start=None if self.random_window else 0, rng=rng,
                )  # fmt: skip
            except _CorruptSample as err:
                self.counter.add(f"{key} in {url}: {err}")
            except Exception as err:  # anything else a broken sample can raise: count it, never crash
                self.counter.add(f"{key} in {url}: {type(err).__name__}: {' '.join(str(err).split())}")


# --------------------------------------------------------------------------------------------------- module


class TalkingClipDataModule(L.LightningDataModule):
    """Clip shards -> batches for the FantasyTalking training stages.

    Args:
        shards: a shard folder, a glob, a ``.tar`` path, or a list of those.
        batch_size: clips per batch (per process).
        num_workers: DataLoader worker processes (each reads its own shards).
        shuffle_buffer: raw samples each reader holds for shuffling in training (1 = none). A 512 px, 81-frame
            sample is a few MB (more with cached latents): memory is about ``buffer x sample x workers``.
        val_fraction: fraction of the shards held out for validation (by shard, deterministic given ``seed``).
        val_shards: explicit validation shards instead (they are removed from training).
        seed: seeds shard order, sample shuffle, random windows and the split.
        num_frames: frames per clip to use (default: all the shards have); shorter windows start at a random
            frame in training (``random_window``) and at frame 0 in validation.
        fps: expected clip frame rate (checked; default: whatever the shards have).
        fields: fields to load, from :data:`ALL_FIELDS` (``prompt`` and ``key`` always come).
        motion_stats: ``stats.json`` path or its content (default: ``stats.json`` beside the shards).
        random_window: draw the window start at random in training when ``num_frames`` is shorter than the clips.
        drop_last: drop the last incomplete training batch.
        resampled: draw training shards with replacement forever (for multi-node runs whose shard count does not
            divide evenly); then ``epoch_length`` (batches per epoch per process) is required.
        epoch_length: batches per training epoch per process when ``resampled``.
        pin_memory: passed to the DataLoaders.
        persistent_workers: passed to the DataLoaders.
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 16,
        val_fraction: float = 0.0,
        val_shards: Sequence[str | os.PathLike[str]] | None = None,
        seed: int = 0,
        num_frames: int | None = None,
        fps: float | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        motion_stats: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        random_window: bool = True,
        drop_last: bool = True,
        resampled: bool = False,
        epoch_length: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        unknown = [f for f in fields if f not in ALL_FIELDS]
        if unknown:
            raise InputError(f"unknown fields {unknown}; choose from {', '.join(ALL_FIELDS)}")
        if batch_size < 1 or num_workers < 0:
            raise InputError("batch_size must be >= 1 and num_workers >= 0")
        if num_frames is not None and (num_frames < 1 or (num_frames - 1) % 4):
            raise InputError(f"num_frames must be 4k+1 (e.g. 17, 81), got {num_frames}")
        if resampled and not epoch_length:
            raise InputError("resampled=True draws shards forever: also set epoch_length (batches per epoch)")
        self.save_hyperparameters(ignore=["motion_stats"] if isinstance(motion_stats, Mapping) else None)
        self.shards_arg = shards
        self.batch_size, self.num_workers, self.shuffle_buffer = batch_size, num_workers, shuffle_buffer
        self.val_fraction, self.val_shards_arg, self.seed = val_fraction, val_shards, seed
        self.num_frames, self.fps, self.fields = num_frames, fps, tuple(fields)
        self.motion_stats_arg = motion_stats
        self.random_window, self.drop_last = random_window, drop_last
        self.resampled, self.epoch_length = resampled, epoch_length
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self._counter = CorruptCounter()
        self._epochs = {"train": multiprocessing.Value("q", 0), "val": multiprocessing.Value("q", 0)}
        self.train_shards: list[str] = []
        self.val_shards: list[str] = []
        self.motion_stats: dict[str, Any] | None = None
        self.shard_info: dict[str, Any] = {}
        self._face_stats: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def corrupt_samples(self) -> int:
        """Corrupt samples met so far (all workers, all passes)."""
        return self._counter.value

    # ---------------------------------------------------------------------------------------------- setup

    def _load_stats(self, shards: Sequence[str]) -> dict[str, Any] | None:
        arg = self.motion_stats_arg
        if isinstance(arg, Mapping):
            return dict(arg)
        path = Path(arg) if arg is not None else Path(shards[0]).parent / fmt.STATS
        if not path.is_file():
            if "motion" in self.fields:
                raise InputError(
                    f"motion statistics not found: {path}; pass motion_stats= or drop 'motion' from fields"
                )
            return None
        try:
            stats = json.loads(path.read_text(encoding="utf-8"))
            for k in ("face", "body"):
                if stats[k].get("p1") is None or stats[k].get("p99") is None:
                    raise KeyError(f"{k}.p1/p99")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"motion statistics {path} are unusable ({err}); rerun preprocessing") from None
        return stats

    def _peek(self, shards: Sequence[str]) -> dict[str, Any]:
        """``meta.json`` of the first readable sample, to check settings before training starts."""
        for shard in shards:
            try:
                with tarfile.open(shard, "r") as tar:
                    for member in tar:
                        if member.name.endswith("." + fmt.META):
                            fh = tar.extractfile(member)
                            if fh is not None:
                                return fmt.read_json_bytes(fh.read())
            except (tarfile.TarError, OSError, ValueError) as err:
                log.warning("cannot read %s while checking the dataset (%s)", shard, err)
        raise InputError(f"none of the {len(shards)} shards holds a readable sample; rerun preprocessing")

    def setup(self, stage: str | None = None) -> None:
        shards = list_shards(self.shards_arg)
        val_arg = list_shards(self.val_shards_arg) if self.val_shards_arg else None
        self.train_shards, self.val_shards = split_shards(
            shards, val_fraction=self.val_fraction, val_shards=val_arg, seed=self.seed
        )
        if not self.train_shards and stage in (None, "fit"):
            raise InputError("no training shards left after the validation split; add shards or lower val_fraction")
        self.motion_stats = self._load_stats(shards)
        meta = self._peek(self.train_shards or self.val_shards)
        stored, clip_fps = int(meta["num_frames"]), float(meta["fps"])
        if self.fps is not None and abs(self.fps - clip_fps) > 1e-3:
            raise InputError(f"the shards hold clips at {clip_fps:g} fps, not {self.fps:g}; set fps={clip_fps:g}")
        lengths = (self.motion_stats or {}).get("clip_frames")
        if "motion" in self.fields and lengths and stored not in lengths:
            log.warning(
                "the motion statistics were measured on clips of %s frames but these shards hold %d-frame clips: "
                "raw motion grows with clip length, so the motion labels will be mis-scaled; pass the stats.json of "
                "shards with %d-frame clips as motion_stats", "/".join(map(str, lengths)), stored, stored,
            )  # fmt: skip
        if self.num_frames is not None and self.num_frames > stored:
            raise InputError(f"the shards hold {stored}-frame clips; set num_frames to {stored} or fewer")
        if "latents" in self.fields and self.num_frames not in (None, stored):
            raise InputError(f"cached latents cover whole {stored}-frame clips; set num_frames={stored} or None")
        for name, key, option in (
            ("audio_features", "wav2vec", "--cache-features"),
            ("latents", "latents", "--cache-latents"),
        ):
            if name in self.fields and not meta.get(key):
                raise InputError(
                    f"the shards have no cached {key}: preprocess with {option}, or drop '{name}' from fields"
                )
        self.shard_info = meta
        world = self.trainer.world_size if self.trainer is not None else 1
        if not self.resampled and len(self.train_shards) < world * max(1, self.num_workers):
            log.warning(
                "%d training shards for %d processes x %d workers: some readers get no shard; write smaller "
                "shards or use resampled=True",
                len(self.train_shards), world, max(1, self.num_workers),
            )  # fmt: skip

    def face_embedding_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation ``float32 (E,)`` of ``face_embedding`` over every training sample (read
        once from the tar files, then kept): what ``face.standardize`` folds into a fresh face conditioner."""
        if self._face_stats is None:
            if not self.train_shards:
                self.setup("fit")
            features = [fmt.from_npy(m[fmt.FACE_EMBEDDING]).reshape(-1)
                        for m in read_members(self.train_shards, [fmt.FACE_EMBEDDING]).values() if fmt.FACE_EMBEDDING in m]  # fmt: skip
            if len(features) < 2:
                raise InputError(f"the training shards hold {len(features)} face embeddings; standardising the face "
                                 "features needs at least 2 (set face.standardize false).")  # fmt: skip
            if len({f.shape for f in features}) != 1:
                raise InputError("the training shards' face embeddings differ in size; preprocess them all with one "
                                 "face encoder.")  # fmt: skip
            stack = np.stack(features).astype(np.float64)  # (N, E)
            self._face_stats = (stack.mean(0).astype(np.float32), stack.std(0).astype(np.float32))
        return self._face_stats

    # ---------------------------------------------------------------------------------------------- loaders

    def dataset(self, split: str = "train") -> wds.DataPipeline:
        """The WebDataset pipeline of one split (``"train"`` shuffles; ``"val"`` reads in order)."""
        if not self.train_shards and not self.val_shards:
            self.setup()
        train = split == "train"
        urls = self.train_shards if train else self.val_shards
        if not urls:
            raise InputError(f"no {split} shards; set val_fraction or val_shards for a validation split")
        epoch = self._epochs["train" if train else "val"]
        stages = _ClipStages(
            self._counter, fields=self.fields, num_frames=self.num_frames, fps=self.fps,
            motion_stats=self.motion_stats, random_window=train and self.random_window,
            shuffle_buffer=self.shuffle_buffer if train else 1, seed=self.seed, epoch=epoch,
        )  # fmt: skip
        resampled = train and self.resampled
        pipeline = wds.DataPipeline(
            _EpochShardList(urls, self.seed, shuffle=train, epoch=epoch, resampled=resampled),
            None if resampled else wds.split_by_node,
            None if resampled else wds.split_by_worker,
            wds.tarfile_to_samples(handler=self._counter.handler),
            stages.shuffle,
            stages.decode,
        )
        if resampled and self.epoch_length:
            per_worker = math.ceil(self.epoch_length * self.batch_size / max(1, self.num_workers))
            pipeline = pipeline.with_epoch(per_worker)
        return pipeline

    def _loader(self, split: str) -> DataLoader:
        train = split == "train"
        return _EpochLoader(
            self.dataset(split),
            epoch=self._epochs["train" if train else "val"],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_clips,
            drop_last=self.drop_last if train else False,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")
