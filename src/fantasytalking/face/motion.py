"""Motion intensities of a clip (FANTASYTALKING.md section 4): facial = landmark variance, body = pose variance.

Both measures use one formula, :func:`normalised_variance`. For a point sequence ``P`` of shape ``(N, K, 2)``
(``N`` frames, ``K`` points, pixel ``x, y``):

1. ``size`` = the mean over frames of the diagonal of that frame's bounding box of the ``K`` points
   (``mean_n || max_k P[n, k] - min_k P[n, k] ||_2``), unless a scale is given;
2. ``X = P / size`` (so the value does not depend on resolution or on how large the person appears);
3. ``mu = mean_n X`` is the clip's mean shape ``(K, 2)``;
4. intensity = ``mean_{n, k, c} (X[n, k, c] - mu[k, c])**2``: the temporal variance (ddof 0) of each normalised
   coordinate, averaged over the ``2K`` coordinates.

Non-finite coordinates (undetected joints) are left out of every mean; fewer than two usable frames give 0.
The values are raw (typically 1e-5 for a still face to 1e-2 for strong motion); preprocessing writes their dataset
percentiles to ``stats.json`` and the model normalises with :func:`normalise_intensity` (p1 -> 0, p99 -> 1).

Facial intensity includes rigid head motion (the paper takes the variance of the landmark sequence as is);
``remove_translation=True`` subtracts each frame's landmark centroid first, leaving expression and head rotation.

Body pose source: the paper uses DWPose body joints. DWPose weights cannot be downloaded in this offline build, so
the default :class:`HeadShoulderProxy` derives 8 pseudo-joints from the face track (face-box centre, nose tip,
chin, jaw ends, and neck and shoulders placed below the face box at fixed face-box proportions). It sees head
translation, scale and rotation, and upper-body motion only through the head; hands and shoulder shrugs are
invisible to it. Any model can replace it through the :class:`PoseSource` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fantasytalking.errors import InputError

__all__ = [
    "HeadShoulderProxy",
    "PoseSource",
    "body_intensity",
    "facial_intensity",
    "intensity_stats",
    "normalise_intensity",
    "normalised_variance",
]


def normalised_variance(points: np.ndarray, *, scale: float | None = None) -> float:
    """Temporal variance of a point sequence ``(N, K, 2)`` in units of the points' own size (see module doc)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise InputError(f"points must have shape (N, K, 2), got {tuple(p.shape)}")
    p = np.where(np.isfinite(p), p, np.nan)
    usable = np.isfinite(p).all(axis=2).any(axis=1)  # (N,) frames with at least one whole point
    if usable.sum() < 2:
        return 0.0
    p = p[usable]
    if scale is None:
        with np.errstate(invalid="ignore"):
            diag = np.linalg.norm(np.nanmax(p, axis=1) - np.nanmin(p, axis=1), axis=-1)  # (N,)
        size = float(np.nanmean(diag))
    else:
        size = float(scale)
    if not np.isfinite(size) or size <= 0:
        return 0.0
    x = p / size  # (N, K, 2)
    mu = np.nanmean(x, axis=0, keepdims=True)  # (1, K, 2) clip mean shape
    dev = (x - mu) ** 2
    if not np.isfinite(dev).any():
        return 0.0
    return float(np.nanmean(dev))


def facial_intensity(landmarks: np.ndarray, *, remove_translation: bool = False) -> float:
    """Facial motion intensity of a clip from its ``(N, 68, 2)`` landmarks (raw, not normalised to [0, 1]).

    See the module docstring for the exact formula; the face size used is the mean landmark-box diagonal.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise InputError(f"landmarks must have shape (N, 68, 2), got {tuple(pts.shape)}")
    if remove_translation:
        pts = pts - np.nanmean(pts, axis=1, keepdims=True)  # per-frame centroid
        # The size must come from the original boxes, which translation does not change.
    return normalised_variance(pts)


def body_intensity(joints: np.ndarray, *, scale: float | None = None) -> float:
    """Body motion intensity of a clip from pose joints ``(N, J, 2)`` (raw; NaN marks an undetected joint).

    ``scale`` overrides the body size (default: mean diagonal of the joints' bounding box).
    """
    return normalised_variance(joints, scale=scale)


# --------------------------------------------------------------------------------------------------- pose sources


@runtime_checkable
class PoseSource(Protocol):
    """Body joints of a clip: ``joints(frames uint8 (N, H, W, 3), landmarks (N, 68, 2), boxes (N, 4)) -> (N, J, 2)``.

    Joints are pixel ``(x, y)`` in the frames; NaN marks a joint not found. ``name`` goes into ``meta.json``.
    """

    name: str

    def joints(self, frames: np.ndarray, landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...


class HeadShoulderProxy:
    """Offline stand-in for a body-pose model: 8 pseudo-joints from the face landmarks and the face-box track.

    Joints: face-box centre, nose tip (30), chin (8), jaw ends (0, 16), neck ``(cx, y1 + 0.5 h)``, and shoulders
    ``(cx -+ 1.2 w, y1 + 0.8 h)``, with ``(cx, y1, w, h)`` the face box's centre x, bottom, width, height. The
    neck and shoulders follow the box (translation and scale), not its roll. See the module docstring for what
    this proxy cannot see.
    """

    name = "head-shoulder-proxy"

    def joints(self, frames: np.ndarray, landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        lm = np.asarray(landmarks, dtype=np.float64)  # (N, 68, 2)
        bx = np.asarray(boxes, dtype=np.float64)  # (N, 4)
        if lm.ndim != 3 or lm.shape[1:] != (68, 2) or bx.shape != (lm.shape[0], 4):
            raise InputError(f"need landmarks (N, 68, 2) and boxes (N, 4), got {lm.shape} and {bx.shape}")
        cx, cy = (bx[:, 0] + bx[:, 2]) / 2, (bx[:, 1] + bx[:, 3]) / 2
        w, h, y1 = bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1], bx[:, 3]
        torso = [
            np.stack([cx, cy], -1),
            np.stack([cx, y1 + 0.5 * h], -1),  # neck
            np.stack([cx - 1.2 * w, y1 + 0.8 * h], -1),  # shoulders
            np.stack([cx + 1.2 * w, y1 + 0.8 * h], -1),
        ]
        head = [lm[:, 30], lm[:, 8], lm[:, 0], lm[:, 16]]
        return np.stack(torso[:1] + head + torso[1:], axis=1).astype(np.float32)  # (N, 8, 2)


# --------------------------------------------------------------------------------------------------- statistics


#: Number of equal steps of the quantile table in ``stats.json`` (``quantiles``: raw values at levels k / 20).
QUANTILE_STEPS = 20


def intensity_stats(values: Iterable[float]) -> dict[str, Any]:
    """Dataset statistics of raw intensities: ``count, min, max, mean, p1, p5, p50, p95, p99`` (finite values), and
    ``quantiles``: the raw values at the levels ``k / QUANTILE_STEPS``, ``k = 0 .. QUANTILE_STEPS`` (minimum to
    maximum), from which the motion conditioner's request scale is fitted
    (:meth:`~fantasytalking.conditioning.MotionConditioner.set_statistics_from`)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"count": 0, "min": None, "max": None, "mean": None, "p1": None, "p5": None, "p50": None,
                "p95": None, "p99": None, "quantiles": None}  # fmt: skip
    q = np.percentile(arr, [1, 5, 50, 95, 99])
    table = np.quantile(arr, np.linspace(0.0, 1.0, QUANTILE_STEPS + 1))  # (QUANTILE_STEPS + 1,)
    return {
        "count": int(arr.size),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "p1": float(q[0]),
        "p5": float(q[1]),
        "p50": float(q[2]),
        "p95": float(q[3]),
        "p99": float(q[4]),
        "quantiles": [float(v) for v in table],
    }


def normalise_intensity(value: float, stats: Mapping[str, Any], *, low: str = "p1", high: str = "p99") -> float:
    """Map a raw intensity to [0, 1]: ``clip((value - stats[low]) / (stats[high] - stats[low]), 0, 1)``.

    A degenerate range (``high <= low``, e.g. a one-clip dataset) maps everything to 0.5.
    """
    lo, hi = stats.get(low), stats.get(high)
    if lo is None or hi is None:
        raise InputError(f"motion statistics lack {low!r}/{high!r}; rerun preprocessing to rewrite stats.json")
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        return 0.5
    return float(np.clip((float(value) - lo) / (hi - lo), 0.0, 1.0))
