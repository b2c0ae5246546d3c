"""The Frechet distance between two Gaussians and the feature statistics behind FID and FVD.

``d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` (Heusel et al., 2017), computed in float64. The
trace of the matrix square root uses ``tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: the right-hand
matrix is symmetric positive semi-definite, so its eigenvalues are real, which avoids the complex parts and the
``eps`` retries of ``scipy.linalg.sqrtm`` on nearly singular covariances (few samples, many dimensions).

:class:`FrechetFeatureMetric` keeps the running sums ``sum f`` and ``sum f f^T`` (float64, summed across processes),
so FID/FVD need not store every feature and the distributed result equals the single-process one exactly.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from fantasytalking.errors import InputError

__all__ = ["FrechetFeatureMetric", "frechet_distance", "gaussian_from_sums"]


def _sqrt_psd(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues from round-off clipped to 0)."""
    w, v = np.linalg.eigh((mat + mat.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray | torch.Tensor,
    sigma1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    sigma2: np.ndarray | torch.Tensor,
) -> float:
    """Squared Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``; means ``(D,)``, covs ``(D, D)``."""
    m1, m2 = (np.asarray(torch.as_tensor(m).double().cpu(), dtype=np.float64) for m in (mu1, mu2))
    s1, s2 = (np.asarray(torch.as_tensor(s).double().cpu(), dtype=np.float64) for s in (sigma1, sigma2))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise InputError(
            f"Frechet distance needs means (D,) and covariances (D, D) of one D; got {m1.shape}, {s1.shape}, "
            f"{m2.shape}, {s2.shape}"
        )
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1  # symmetric PSD, same non-zero spectrum as S1 S2
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum())
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def gaussian_from_sums(total: torch.Tensor, outer: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` from ``sum f``, ``sum f f^T`` over ``n >= 2`` samples."""
    if n < 2:
        raise InputError(f"a Frechet distance needs at least 2 samples per side, got {n}")
    s = total.double().cpu().numpy()
    mu = s / n
    cov = (outer.double().cpu().numpy() - n * np.outer(mu, mu)) / (n - 1)
    return mu, cov


class FrechetFeatureMetric(Metric):
    """Base for FID/FVD: ``update(videos, real=...)`` adds features of real or generated samples; ``compute()``.

    Subclasses implement :meth:`features` (one video ``(3, F, H, W)`` in [0, 1] -> ``(N, D)``) and set ``num_features``.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    real_sum: torch.Tensor
    real_outer: torch.Tensor
    real_n: torch.Tensor
    fake_sum: torch.Tensor
    fake_outer: torch.Tensor
    fake_n: torch.Tensor

    def __init__(self, num_features: int, value_range: str = "01", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_features = int(num_features)
        self.value_range = value_range
        d = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @abstractmethod
    def features(self, video: torch.Tensor) -> torch.Tensor:
        """One video ``float (3, F, H, W)`` in [0, 1] -> features ``(N, D)``."""

    def update_features(self, feats: torch.Tensor, real: bool) -> None:
        """Add already-computed features ``(N, D)`` (for callers with their own extractor)."""
        f = feats.detach().reshape(feats.shape[0], -1).to(self.real_sum.device, torch.float64)  # (N, D)
        if f.shape[1] != self.num_features:
            raise InputError(f"expected {self.num_features}-d features, got {f.shape[1]}")
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + f.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + f.T @ f)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + f.shape[0])

    def update(self, videos: Any, real: bool) -> None:  # type: ignore[override]
        """``videos``: ``(B, C, F, H, W)`` tensor (see :mod:`fantasytalking.metrics.video` for ranges) or paths."""
        from fantasytalking.metrics.video import iter_videos

        for video in iter_videos(videos, self.value_range):  # type: ignore[arg-type]
            with torch.no_grad():
                self.update_features(self.features(video), real)

    def compute(self) -> torch.Tensor:
        mu_r, cov_r = gaussian_from_sums(self.real_sum, self.real_outer, int(self.real_n))
        mu_f, cov_f = gaussian_from_sums(self.fake_sum, self.fake_outer, int(self.fake_n))
        return torch.tensor(frechet_distance(mu_r, cov_r, mu_f, cov_f), dtype=torch.float64)
