"""The SynthTalk ground-truth measures as one ``torchmetrics.Metric`` (its states sum across processes).

:class:`SynthTalkMetric` scores videos of SynthTalk faces from their PIXELS (:mod:`fantasytalking.metrics.synthtalk`)
against each clip's ground truth (``truth.npy`` / ``truth.json`` of a SynthTalk shard, see
:func:`fantasytalking.data.synthtalk.read_truth`, or :func:`truth_of` for one clip):

* ``lipsync``: Pearson correlation of the measured mouth opening with the true opening, mean over videos;
* ``closed_in_silence``: share of the frames of silences longer than ``min_silence_seconds`` whose measured opening
  is below :data:`~fantasytalking.metrics.synthtalk.MOUTH_CLOSED_THRESHOLD`, mean over the videos that have one;
* ``identity_error``: :func:`~fantasytalking.metrics.synthtalk.identity_error_over_frames` against each video's
  reference (the portrait it was made from, or its :class:`~fantasytalking.data.synthtalk.face.Identity`);
* ``head_motion`` and ``motion_energy``: mean over videos;
* ``motion_corr``: Pearson correlation, over videos, of the measured head motion with the requested motion
  intensity (the conditioner's input), when the requests are given.

Usable alone::

    metric = SynthTalkMetric(fps=23)
    metric.update(videos, truth_open, silent=silent, references=portraits, requested_motion=[0.1, 1.0])
    metric.compute()  # {"lipsync": ..., "closed_in_silence": ..., ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from fantasytalking.errors import InputError

__all__ = ["SynthTalkMetric", "truth_of"]


def truth_of(truth: np.ndarray, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """One SynthTalk clip's ``truth.npy`` array ``(N, C)`` (and ``truth.json`` dict) -> keyword arguments of
    :meth:`SynthTalkMetric.update` for that clip: ``truth_open`` ``(N,)``, ``silent`` ``bool (N,)`` (no speech
    phoneme at the frame) and, from the dict, ``requested_motion``."""
    from fantasytalking.data.synthtalk import TRUTH_COLUMNS

    arr = np.asarray(truth, np.float32)
    if arr.ndim != 2 or arr.shape[1] != len(TRUTH_COLUMNS):
        raise InputError(f"a SynthTalk truth array is (frames, {len(TRUTH_COLUMNS)}), got shape {arr.shape}")
    out: dict[str, Any] = {
        "truth_open": arr[:, TRUTH_COLUMNS.index("open")],
        "silent": arr[:, TRUTH_COLUMNS.index("speaking")] <= 0,
    }
    if info and info.get("motion_intensity") is not None:
        out["requested_motion"] = float(info["motion_intensity"])
    return out


def _per_video(value: Any, n: int, what: str, item_ndim: int | None) -> list[Any]:
    """``value`` for each of ``n`` videos: a sequence of ``n``, a batch ``(n, ...)`` tensor / array whose items have
    ``item_ndim`` dimensions, one item when ``n == 1``, or None for all."""
    if value is None:
        return [None] * n
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if item_ndim is not None and value.ndim == item_ndim + 1 and len(value) == n:
            return list(value)
        if item_ndim is not None and value.ndim == item_ndim and n == 1:
            return [value]
        if item_ndim is None and value.ndim == 1 and len(value) == n:
            return list(value)
        shape = tuple(value.shape)
        raise InputError(f"{what}: give one per video ({n} videos) as a list or a batch, got an array of shape {shape}")
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) == n:
            return list(value)
        raise InputError(f"{what}: give one per video, got {len(value)} for {n} videos")
    if n == 1:
        return [value]
    raise InputError(f"{what}: give one per video ({n} videos) as a list, got one {type(value).__name__}")


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=dtype)


class SynthTalkMetric(Metric):
    """SynthTalk ground-truth measures over videos, read from their pixels (module doc).

    Args:
        fps: frame rate of tensor videos (files carry their own); needed for the silences' length.
        min_silence_seconds: silences longer than this count for ``closed_in_silence`` (the issue's 0.3 s).
        identity_stride: every ``k``-th frame from frame ``k`` on is compared with the reference.
        value_range: ``"01"`` (default), ``"11"`` or ``"auto"`` for float tensor videos
            (:mod:`fantasytalking.metrics.video`).
    """

    higher_is_better = None  # lip sync and closure: higher; identity error: lower; motion: neither
    is_differentiable = False
    full_state_update = False
    KEYS = ("lipsync", "closed_in_silence", "identity_error", "head_motion", "motion_energy")
    #: running sums of the (requested intensity x, measured head motion y) pairs, for their Pearson correlation
    PAIR_SUMS = ("n", "x", "y", "xy", "xx", "yy")
    sums: torch.Tensor
    counts: torch.Tensor
    pairs: torch.Tensor

    def __init__(
        self,
        *,
        fps: float | None = None,
        min_silence_seconds: float = 0.3,
        identity_stride: int = 8,
        value_range: str = "01",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fps = None if fps is None else float(fps)
        self.min_silence_seconds = float(min_silence_seconds)
        self.identity_stride = max(1, int(identity_stride))
        self.value_range = value_range
        # one sum and one count per key: a video without a long silence or a reference adds to none of its keys
        self.add_state("sums", torch.zeros(len(self.KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(len(self.KEYS), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pairs", torch.zeros(len(self.PAIR_SUMS), dtype=torch.float64), dist_reduce_fx="sum")

    def score_one(
        self,
        frames: np.ndarray,
        truth_open: Any,
        *,
        fps: float | None,
        silent: Any = None,
        reference: Any = None,
    ) -> dict[str, float | None]:
        """The measures of one video ``uint8 (N, H, W, 3)`` against its truth (``None`` where it has none), over
        the frames both have (:func:`~fantasytalking.metrics.synthtalk.score_synthtalk`)."""
        from fantasytalking.metrics.synthtalk import score_synthtalk
        from fantasytalking.metrics.video import iter_images

        if fps is None:
            raise InputError("SynthTalkMetric needs the frame rate of tensor videos: pass fps= (SynthTalk clips "
                             "record theirs in synthtalk.json)")  # fmt: skip
        if isinstance(reference, (str, bytes, torch.Tensor)) or hasattr(reference, "__fspath__"):
            reference = next(iter_images([reference], self.value_range))  # type: ignore[arg-type,list-item]
        return score_synthtalk(
            frames,
            _as_numpy(truth_open, np.float32),
            silent=None if silent is None else _as_numpy(silent, bool),
            reference=reference,
            fps=fps,
            min_silence_seconds=self.min_silence_seconds,
            identity_stride=self.identity_stride,
        ).as_dict()

    def update(  # type: ignore[override]
        self,
        videos: Any = None,
        truth_open: Any = None,
        *,
        silent: Any = None,
        references: Any = None,
        requested_motion: Any = None,
        scores: Sequence[dict[str, Any]] = (),
    ) -> None:
        """``videos``: ``(B, 3, F, H, W)`` or paths; ``truth_open``: the true opening per frame, ``(B, N)`` or one
        ``(N,)`` per video; ``silent``: ``bool`` per frame (default: true opening 0); ``references``: per video a
        frame ``uint8 (H, W, 3)`` / ``(3, H, W)`` tensor / image path / ``Identity``; ``requested_motion``: per
        video the requested intensity. ``scores``: videos already scored (:meth:`score_one`, with an optional
        ``"requested_motion"``), added as they are."""
        from fantasytalking.metrics.video import iter_frames_with_fps

        for one in scores:
            self._add(one)
        if videos is None:
            return
        if truth_open is None:
            raise InputError("SynthTalkMetric.update needs truth_open (the true mouth opening of each video)")
        pairs = list(iter_frames_with_fps(videos, self.fps, self.value_range))  # type: ignore[arg-type]
        n = len(pairs)
        truths = _per_video(truth_open, n, "truth_open", 1)
        silents = _per_video(silent, n, "silent", 1)
        refs = _per_video(references, n, "references", 3)
        asks = _per_video(requested_motion, n, "requested_motion", None)
        for (frames, rate), truth, sil, ref, ask in zip(pairs, truths, silents, refs, asks, strict=True):
            self._add({**self.score_one(frames, truth, fps=rate, silent=sil, reference=ref), "requested_motion": ask})

    def _add(self, one: dict[str, Any]) -> None:
        """One video's scores (``None``: not measured) and its optional ``requested_motion`` into the states."""
        # a NaN would turn the whole mean into NaN, which the reports then leave out: the measure would vanish
        for key in (*self.KEYS, "requested_motion"):
            if one.get(key) is not None and not np.isfinite(float(one[key])):
                raise InputError(f"a video's {key} is {one[key]}; give finite scores, None where a video has none")
        if one.get("requested_motion") is not None and one.get("head_motion") is None:
            raise InputError("a requested_motion needs the video's head_motion; score the video with score_one")
        for i, key in enumerate(self.KEYS):
            if one.get(key) is not None:
                self.sums[i] += float(one[key])
                self.counts[i] += 1
        if one.get("requested_motion") is not None:
            x, y = float(one["requested_motion"]), float(one["head_motion"])
            self.pairs += torch.tensor([1.0, x, y, x * y, x * x, y * y], dtype=torch.float64,
                                       device=self.pairs.device)  # fmt: skip

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over the videos that have each measure (NaN where none has), and ``motion_corr``: the Pearson
        correlation of measured head motion with the requested intensity over the videos that gave one (NaN with
        fewer than two, or when either is constant)."""
        means = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1).double(), torch.nan)
        out = {k: means[i] for i, k in enumerate(self.KEYS)}
        n, x, y, xy, xx, yy = self.pairs.unbind()
        cov, var_x, var_y = n * xy - x * y, n * xx - x * x, n * yy - y * y
        tiny = 1e-12 * torch.clamp(n * n, min=1.0)
        ok = (n >= 2) & (var_x > tiny) & (var_y > tiny)
        out["motion_corr"] = torch.where(ok, cov / torch.sqrt(var_x.clamp(min=1e-300) * var_y.clamp(min=1e-300)),
                                         torch.nan)  # fmt: skip
        return out
