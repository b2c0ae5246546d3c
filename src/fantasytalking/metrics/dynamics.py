"""Expression / motion dynamics of generated videos from face landmarks (no downloaded weights).

Per video (landmarks ``(N, 68, 2)`` at ``fps``; ``s`` = mean outer-eye-corner distance ``|p36 - p45|``):

- ``facial_intensity``: :func:`fantasytalking.face.facial_intensity` (the paper's facial motion intensity, the
  temporal variance of the landmark sequence in face-size units; raw, not normalised to [0, 1]);
- ``landmark_speed``: mean over frames and points of ``|p_t - p_{t-1}| / s``, times ``fps`` (face sizes / second):
  all motion, head included;
- ``expression_speed``: the same after removing each frame's centroid (head translation), closer to expression.

A frozen face scores 0 on all three; the paper's "subject dynamics" (optical flow) is a different, flow-based
quantity, so compare these only between systems measured the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from fantasytalking.errors import InputError
from fantasytalking.metrics.video import LazyLandmarkerMixin

__all__ = ["MotionDynamics", "landmark_dynamics"]


def landmark_dynamics(landmarks: np.ndarray, fps: float) -> dict[str, float]:
    """``(N, 68, 2)`` landmarks at ``fps`` -> ``{"facial_intensity", "landmark_speed", "expression_speed"}``."""
    from fantasytalking.face import facial_intensity

    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise InputError(f"landmarks must have shape (N, 68, 2), got {tuple(lm.shape)}")
    if len(lm) < 2:
        return {"facial_intensity": 0.0, "landmark_speed": 0.0, "expression_speed": 0.0}
    size = float(np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1).mean())
    size = max(size, 1e-6)
    step = np.linalg.norm(np.diff(lm, axis=0), axis=-1)  # (N-1, 68)
    centred = lm - lm.mean(axis=1, keepdims=True)
    step_c = np.linalg.norm(np.diff(centred, axis=0), axis=-1)  # (N-1, 68)
    return {
        "facial_intensity": float(facial_intensity(lm.astype(np.float32))),
        "landmark_speed": float(step.mean() / size * fps),
        "expression_speed": float(step_c.mean() / size * fps),
    }


class MotionDynamics(LazyLandmarkerMixin, Metric):
    """Mean over videos of :func:`landmark_dynamics` (higher = more motion; not better or worse in itself)."""

    higher_is_better = None
    is_differentiable = False
    full_state_update = False
    KEYS = ("facial_intensity", "landmark_speed", "expression_speed")
    sums: torch.Tensor
    count: torch.Tensor

    def __init__(self, *, landmarker: Any = None, fps: float = 25.0, value_range: str = "01", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._landmarker = landmarker
        self.fps = float(fps)
        self.value_range = value_range
        self.add_state("sums", torch.zeros(len(self.KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")


    def update_landmarks(self, landmarks: np.ndarray, fps: float | None = None) -> None:
        """Add one video's landmarks ``(N, 68, 2)`` (``update(landmarks=[...])``)."""
        self.update(landmarks=[landmarks], fps=fps)

    def update(  # type: ignore[override]
        self, videos: Any = None, fps: float | None = None, *, landmarks: Any = ()
    ) -> None:
        """``videos``: ``(B, 3, F, H, W)`` (at ``fps``, default the constructor's) or paths (their own fps);
        ``landmarks``: videos already tracked, one ``(N, 68, 2)`` array each (at ``fps``)."""
        from fantasytalking.face import track_face
        from fantasytalking.metrics.video import iter_frames_with_fps

        rate = self.fps if fps is None else fps
        for lm in landmarks:
            self._add(np.asarray(lm), rate)
        if videos is None:
            return
        for frames, own_rate in iter_frames_with_fps(videos, rate, self.value_range):  # type: ignore[arg-type]
            self._add(track_face(frames, self.landmarker).landmarks, own_rate or rate)

    def _add(self, landmarks: np.ndarray, fps: float) -> None:
        d = landmark_dynamics(landmarks, fps)
        self.sums += torch.tensor([d[k] for k in self.KEYS], dtype=torch.float64, device=self.sums.device)
        self.count += 1

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.sums / self.count.clamp(min=1).double()
        return {k: mean[i] for i, k in enumerate(self.KEYS)}
