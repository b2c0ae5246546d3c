"""Identity consistency: cosine similarity of each frame's face embedding to the reference image's.

dlib's 128-d descriptor by default (offline); any :class:`fantasytalking.face.FaceEncoder` is pluggable, e.g.
``ArcFaceEncoder(path)`` or ``make_face_encoder("arcface:/path/model.pt")``. The paper's IDC uses DINO features of
face crops; this is the face-recognition analogue, so compare it only between systems measured the same way.

Usage::

    idc = IdentityConsistency()                     # dlib
    idc.update(videos, references)                  # (B, 3, F, H, W) + (B, 3, H, W) in [0, 1], or paths
    idc.compute()                                   # mean over videos of the mean per-frame cosine
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from fantasytalking.metrics.video import LazyLandmarkerMixin

__all__ = ["IdentityConsistency", "cosine_to_reference"]


def cosine_to_reference(frame_emb: np.ndarray, ref_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``(N, D)`` to ``(D,)`` -> ``(N,)``."""
    f = np.asarray(frame_emb, np.float64)
    r = np.asarray(ref_emb, np.float64).reshape(-1)
    return (f @ r) / np.maximum(np.linalg.norm(f, axis=-1) * np.linalg.norm(r), 1e-12)


class IdentityConsistency(LazyLandmarkerMixin, Metric):
    """Mean face-embedding cosine similarity to the reference (higher is better).

    Args:
        encoder: a ``FaceEncoder`` (default :class:`fantasytalking.face.DlibFaceEncoder`).
        landmarker: face backend (default dlib).
        frame_stride: embed every ``k``-th frame (embedding is the slow part).
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(
        self,
        *,
        encoder: Any = None,
        landmarker: Any = None,
        frame_stride: int = 4,
        value_range: str = "01",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._encoder = encoder
        self._landmarker = landmarker
        self.frame_stride = max(1, int(frame_stride))
        self.value_range = value_range
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from fantasytalking.face import DlibFaceEncoder

            self._encoder = DlibFaceEncoder()
        return self._encoder


    def score(self, frames: np.ndarray, reference: np.ndarray) -> float:
        """``uint8 (F, H, W, 3)`` frames + ``uint8 (H, W, 3)`` reference -> mean cosine over the sampled frames."""
        from fantasytalking.face import detect_face_landmarks, track_face

        _, ref_lm = detect_face_landmarks(reference, self.landmarker)
        ref = self.encoder.encode(reference, ref_lm)  # (D,)
        sampled = frames[:: self.frame_stride]
        track = track_face(sampled, self.landmarker)
        emb = np.stack([self.encoder.encode(f, lm) for f, lm in zip(sampled, track.landmarks)])  # (N, D)
        return float(cosine_to_reference(emb, ref).mean())

    def update(self, videos: Any, references: Any) -> None:  # type: ignore[override]
        """``videos``: ``(B, 3, F, H, W)`` or paths; ``references``: ``(B, 3, H, W)`` or image paths (a video path
        uses its first frame)."""
        from fantasytalking.metrics.video import iter_images, iter_videos, to_uint8_frames

        for video, ref in zip(
            iter_videos(videos, self.value_range),  # type: ignore[arg-type]
            iter_images(references, self.value_range),  # type: ignore[arg-type]
            strict=True,
        ):
            self.total += self.score(to_uint8_frames(video), ref)
            self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1).double()
