"""The numerical core of SyncNet's Sync-C / Sync-D, as pure functions (no network).

Follows ``SyncNetInstance.evaluate`` / ``calc_pdist`` of ``joonson/syncnet_python`` (the script behind the Sync-C
and Sync-D columns of talking-head papers):

- video embedding ``v_i`` and audio embedding ``a_i`` for every 5-frame window ``i``;
- the audio embeddings are zero-padded by ``vshift`` on both ends, and for every offset ``k in [0, 2 vshift]``
  ``d[i, k] = || v_i - a_pad[i + k] ||_2`` (``torch.nn.functional.pairwise_distance``, eps = 1e-6);
- ``mdist[k] = mean_i d[i, k]``; the AV offset is ``vshift - argmin_k mdist``;
- **Sync-D** (minimum distance) = ``min_k mdist``; **Sync-C** (confidence) = ``median_k mdist - min_k mdist``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fantasytalking.errors import InputError

__all__ = ["SyncResult", "offset_distances", "sync_from_distances", "sync_scores"]

PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default eps, added to the difference


@dataclass(frozen=True)
class SyncResult:
    """SyncNet's verdict on one clip: ``offset`` in frames (positive: audio leads), ``confidence`` (Sync-C),
    ``min_dist`` (Sync-D), and the mean distance per offset ``mean_dists`` ``(2 vshift + 1,)``."""

    offset: int
    confidence: float
    min_dist: float
    mean_dists: np.ndarray


def offset_distances(
    video_emb: torch.Tensor | np.ndarray, audio_emb: torch.Tensor | np.ndarray, vshift: int = 15
) -> np.ndarray:
    """Distances ``(N, 2 vshift + 1)`` between each video embedding ``(N, D)`` and the audio embeddings ``(M, D)``
    shifted by ``-vshift .. +vshift`` (zero vectors beyond the ends), exactly as ``calc_pdist``."""
    v = np.asarray(torch.as_tensor(video_emb).detach().double().cpu())
    a = np.asarray(torch.as_tensor(audio_emb).detach().double().cpu())
    if v.ndim != 2 or a.ndim != 2 or v.shape[1] != a.shape[1]:
        raise InputError(f"embeddings must be (N, D) and (M, D), got {v.shape} and {a.shape}")
    if vshift < 0:
        raise InputError(f"vshift must be >= 0, got {vshift}")
    win = 2 * vshift + 1
    a_pad = np.concatenate(
        [np.zeros((vshift, a.shape[1])), a, np.zeros((vshift + max(0, len(v) - len(a)), a.shape[1]))]
    )
    idx = np.arange(len(v))[:, None] + np.arange(win)[None, :]  # (N, win) rows of a_pad per offset
    diff = v[:, None, :] - a_pad[idx] + PAIRWISE_EPS  # (N, win, D)
    return np.sqrt((diff**2).sum(-1))  # (N, win)


def sync_from_distances(dists: np.ndarray | torch.Tensor, vshift: int | None = None) -> SyncResult:
    """Offset, Sync-C and Sync-D from the ``(N, 2 vshift + 1)`` distance matrix (mean over frames, then min/median)."""
    d = np.asarray(torch.as_tensor(dists).double().cpu())
    if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] % 2 != 1:
        raise InputError(f"distances must be (N >= 1, 2 * vshift + 1), got {d.shape}")
    shift = (d.shape[1] - 1) // 2 if vshift is None else vshift
    mdist = d.mean(axis=0)  # (win,)
    k = int(np.argmin(mdist))  # first minimum, as torch.min
    # torch.median returns the lower middle value; win is odd, so it is the ordinary median.
    med = float(np.sort(mdist)[(len(mdist) - 1) // 2])
    return SyncResult(offset=shift - k, confidence=med - float(mdist[k]), min_dist=float(mdist[k]), mean_dists=mdist)


def sync_scores(
    video_emb: torch.Tensor | np.ndarray, audio_emb: torch.Tensor | np.ndarray, vshift: int = 15
) -> SyncResult:
    """:func:`sync_from_distances` of :func:`offset_distances`."""
    return sync_from_distances(offset_distances(video_emb, audio_emb, vshift), vshift)
