"""The SynthTalk ground-truth measures as one ``torchmetrics.Metric`` (states sum / concatenate across processes).

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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

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


def _per_video(value: Any, n: int, what: str) -> list[Any]:
    """``value`` for each of ``n`` videos: a batch ``(n, ...)`` tensor / array, a sequence of ``n``, or None."""
    if value is None:
        return [None] * n
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1 and len(value) == n:
        return list(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == n:
        return list(value)
    if n == 1:
        return [value]
    raise InputError(f"{what}: give one per video ({n} videos), got {type(value).__name__}")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() < 1e-12 or b.std() < 1e-12:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


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
    sums: torch.Tensor
    counts: torch.Tensor
    requested: list[torch.Tensor] | torch.Tensor
    measured: list[torch.Tensor] | torch.Tensor

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
        # (requested intensity, measured head motion) of each video that has a request, for motion_corr
        self.add_state("requested", default=[], dist_reduce_fx="cat")
        self.add_state("measured", default=[], dist_reduce_fx="cat")

    def frames_and_fps(self, videos: Any) -> list[tuple[np.ndarray, float | None]]:
        """Each video as ``uint8 (N, H, W, 3)`` with its frame rate (a file's own; the constructor's for tensors)."""
        from fantasytalking.metrics.video import iter_videos, read_video_file, to_uint8_frames

        if isinstance(videos, torch.Tensor):
            return [(to_uint8_frames(v), self.fps) for v in iter_videos(videos, self.value_range)]  # type: ignore[arg-type]
        items = [videos] if isinstance(videos, (str, bytes)) or hasattr(videos, "__fspath__") else list(videos)
        out: list[tuple[np.ndarray, float | None]] = []
        for item in items:
            if isinstance(item, torch.Tensor):
                out.append((to_uint8_frames(next(iter_videos([item], self.value_range))), self.fps))  # type: ignore[arg-type]
            else:
                video, rate, _, _ = read_video_file(item)
                out.append((to_uint8_frames(video), rate))
        return out

    def score_one(
        self,
        frames: np.ndarray,
        truth_open: Any,
        *,
        fps: float | None,
        silent: Any = None,
        reference: Any = None,
    ) -> dict[str, float | None]:
        """The measures of one video ``uint8 (N, H, W, 3)`` against its truth (``None`` where it has none)."""
        from fantasytalking.metrics import synthtalk as st

        truth = np.asarray(truth_open.cpu() if isinstance(truth_open, torch.Tensor) else truth_open, np.float32)
        truth = truth.reshape(-1)
        opening = st.mouth_opening(frames)
        n = min(opening.size, truth.size)
        if n < 2:
            raise InputError(f"a video and its truth need 2 or more common frames, got {opening.size} and {truth.size}")
        if silent is None:
            sil = truth[:n] <= 0
        else:
            sil = np.asarray(silent.cpu() if isinstance(silent, torch.Tensor) else silent, bool).reshape(-1)[:n]
        if fps is None:
            raise InputError("SynthTalkMetric needs the frame rate of tensor videos: pass fps= (SynthTalk clips "
                             "record theirs in synthtalk.json)")  # fmt: skip
        long_silent = st.long_silences(sil, fps, self.min_silence_seconds)
        if isinstance(reference, (str, bytes)) or hasattr(reference, "__fspath__"):
            from fantasytalking.metrics.video import iter_images

            reference = next(iter_images([reference]))
        elif isinstance(reference, torch.Tensor):
            from fantasytalking.metrics.video import iter_images

            reference = next(iter_images([reference], self.value_range))  # type: ignore[arg-type]
        return {
            "lipsync": st.lipsync_correlation(opening[:n], truth[:n]),
            "closed_in_silence": st.mouth_closed_fraction(opening[:n], long_silent) if long_silent.any() else None,
            "identity_error": None if reference is None else st.identity_error_over_frames(
                frames, reference, self.identity_stride),
            "head_motion": st.head_motion(frames),
            "motion_energy": st.motion_energy(frames),
        }  # fmt: skip

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
        device = self.sums.device
        for one in scores:
            for i, key in enumerate(self.KEYS):
                if one.get(key) is not None:
                    self.sums[i] += float(one[key])
                    self.counts[i] += 1
            if one.get("requested_motion") is not None:
                self.requested.append(torch.tensor([float(one["requested_motion"])], dtype=torch.float64, device=device))  # type: ignore[union-attr]
                self.measured.append(torch.tensor([float(one["head_motion"])], dtype=torch.float64, device=device))  # type: ignore[union-attr]
        if videos is None:
            return
        if truth_open is None:
            raise InputError("SynthTalkMetric.update needs truth_open (the true mouth opening of each video)")
        pairs = self.frames_and_fps(videos)
        n = len(pairs)
        truths = _per_video(truth_open, n, "truth_open")
        silents = _per_video(silent, n, "silent")
        refs = _per_video(references, n, "references")
        asks = _per_video(requested_motion, n, "requested_motion")
        for (frames, rate), truth, sil, ref, ask in zip(pairs, truths, silents, refs, asks, strict=True):
            one = self.score_one(frames, truth, fps=rate, silent=sil, reference=ref)
            self.update(scores=[{**one, "requested_motion": ask}])

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over the videos that have each measure (NaN where none has), and ``motion_corr`` (NaN with fewer
        than two requests or constant values)."""
        means = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1).double(), torch.nan)
        out = {k: means[i] for i, k in enumerate(self.KEYS)}
        asked = dim_zero_cat(self.requested) if len(self.requested) else torch.zeros(0, dtype=torch.float64)
        got = dim_zero_cat(self.measured) if len(self.measured) else torch.zeros(0, dtype=torch.float64)
        out["motion_corr"] = torch.tensor(_pearson(asked.cpu().numpy(), got.cpu().numpy()), dtype=torch.float64)
        return out
