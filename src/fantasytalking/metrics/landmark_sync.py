"""A lip-sync measure that needs no downloaded weights: mouth opening against the speech envelope.

For one clip of ``N`` frames at ``fps`` with speech ``s`` at ``sr``:

- **mouth opening** ``o_t`` (:func:`mouth_opening_ratio`): mean of the three inner-lip gaps of the iBUG-68 layout
  (``|p61 - p67|, |p62 - p66|, |p63 - p65|``) divided by the outer-eye-corner distance ``|p36 - p45|``, which
  does not change when the jaw opens (a landmark-box size would);
- **speech envelope** ``e_t`` (:func:`speech_envelope`): RMS of the waveform over ``[t - 1/fps, t + 1/fps]``
  around each frame time ``t = i / fps`` (two frame periods, so each frame sees the syllable it sits in);
- **score** (:func:`lagged_correlation`): the highest Pearson correlation of ``o_t`` and ``e_{t + lag}`` over
  ``lag in [-max_lag, max_lag]`` frames (3 by default: +-120 ms at 25 fps, the range of natural audio-visual
  offsets), and that lag.

Real talking videos score clearly above 0 (the mouth opens when energy rises); a frozen or random mouth scores
near 0. It is coarser than SyncNet (it ignores lip shape) but runs anywhere with dlib's shipped models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from fantasytalking.errors import InputError
from fantasytalking.metrics.video import LazyLandmarkerMixin

__all__ = ["LandmarkLipSync", "lagged_correlation", "mouth_opening_ratio", "speech_envelope"]

_INNER_PAIRS = ((61, 67), (62, 66), (63, 65))


def mouth_opening_ratio(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 68, 2)`` landmarks -> ``float64 (N,)`` inner-lip opening in units of the outer-eye-corner distance."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise InputError(f"landmarks must have shape (N, 68, 2), got {tuple(lm.shape)}")
    gaps = np.stack([np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) for a, b in _INNER_PAIRS], 1)  # (N, 3)
    eyes = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)  # (N,)
    return gaps.mean(1) / np.maximum(eyes, 1e-6)


def speech_envelope(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS of ``waveform`` ``(S,)`` over ``+-1/fps`` around each frame time ``i / fps`` -> ``float64 (num_frames,)``."""
    w = np.asarray(waveform, dtype=np.float64).reshape(-1)
    half = max(1, round(sample_rate / fps))
    centres = np.round(np.arange(num_frames) * sample_rate / fps).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(w**2)])
    lo = np.clip(centres - half, 0, len(w))
    hi = np.clip(centres + half, 0, len(w))
    n = np.maximum(hi - lo, 1)
    return np.sqrt((csum[hi] - csum[lo]) / n)


def lagged_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 3) -> tuple[float, int]:
    """Best Pearson correlation of ``x[t]`` with ``y[t + lag]``, ``|lag| <= max_lag``: ``(corr, lag)``.

    Overlaps shorter than 3 samples or with a constant side count as correlation 0.
    """
    a, b = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        xa, yb = (a[: n - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: n + lag])
        c = 0.0 if len(xa) < 3 or xa.std() == 0 or yb.std() == 0 else float(np.corrcoef(xa, yb)[0, 1])
        if c > best:
            best, best_lag = c, lag
    return float(best), int(best_lag)


class LandmarkLipSync(LazyLandmarkerMixin, Metric):
    """Mean over videos of the best lagged correlation of mouth opening and speech envelope (higher is better)."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    corr_sum: torch.Tensor
    lag_abs_sum: torch.Tensor
    count: torch.Tensor

    def __init__(self, *, landmarker: Any = None, max_lag: int = 3, value_range: str = "01", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._landmarker = landmarker
        self.max_lag = int(max_lag)
        self.value_range = value_range
        self.add_state("corr_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("lag_abs_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")


    def score(self, landmarks: np.ndarray, waveform: np.ndarray, sample_rate: int, fps: float) -> tuple[float, int]:
        """Landmarks ``(N, 68, 2)`` + speech -> ``(correlation, lag)``."""
        opening = mouth_opening_ratio(landmarks)
        env = speech_envelope(waveform, sample_rate, fps, len(opening))
        return lagged_correlation(opening, env, self.max_lag)

    def update(  # type: ignore[override]
        self,
        videos: Any,
        audio: Any = None,
        *,
        fps: float | list[float] = 25.0,
        sample_rate: int = 16000,
    ) -> None:
        """Same inputs as :meth:`fantasytalking.metrics.SyncNetScore.update`."""
        from fantasytalking.face import track_face
        from fantasytalking.metrics.video import iter_av

        for frames, rate, wav in iter_av(videos, audio, fps=fps, sample_rate=sample_rate, value_range=self.value_range):  # type: ignore[arg-type]
            track = track_face(frames, self.landmarker)
            corr, lag = self.score(track.landmarks, wav, 16000, rate)
            self.corr_sum += corr
            self.lag_abs_sum += abs(lag)
            self.count += 1

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1).double()
        return {"lipsync_corr": self.corr_sum / n, "lipsync_abs_lag": self.lag_abs_sum / n}
