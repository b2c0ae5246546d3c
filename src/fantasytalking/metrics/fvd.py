"""FVD with an I3D network (the TorchScript ``i3d_torchscript.pt`` of StyleGAN-V's evaluation code), as a Metric.

Convention followed (StyleGAN-V ``metrics/frechet_video_distance.py``, also used by content-debiased FVD): the
detector takes ``(B, 3, T, 224, 224)`` in ``[-1, 1]`` and is called with ``rescale=False, resize=True,
return_features=True``, returning the 400-d logits-layer features. Each video is cut into non-overlapping clips of
``clip_frames`` frames (16 by default, "FVD16"); each clip is one sample. Frames are resized to 224x224 here, so the
detector's own resize is a no-op.

Usage::

    fvd = FVD(i3d_weights="i3d_torchscript.pt")
    fvd.update(real_videos, real=True); fvd.update(fake_videos, real=False); fvd.compute()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fantasytalking.errors import InputError, WeightsError
from fantasytalking.metrics.frechet import FrechetFeatureMetric
from fantasytalking.metrics.weights import resolve_weights

__all__ = ["FVD", "I3D_KWARGS", "load_i3d"]

#: keyword arguments of the TorchScript I3D's forward, as in StyleGAN-V.
I3D_KWARGS: dict[str, bool] = {"rescale": False, "resize": True, "return_features": True}


def load_i3d(weights: str | os.PathLike[str] | None = None, *, download: bool = False) -> nn.Module:
    """The TorchScript I3D from ``weights`` (or the hub cache / a download), on CPU, in eval mode."""
    path = resolve_weights("i3d", weights, download=download)
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:
        raise WeightsError(
            f"cannot load the TorchScript I3D from {path} ({err}); re-download i3d_torchscript.pt"
        ) from err


class FVD(FrechetFeatureMetric):
    """Frechet Video Distance.

    Args:
        i3d_weights: path to ``i3d_torchscript.pt``.
        feature_extractor: any module ``(B, 3, T, 224, 224) in [-1, 1] -> (B, D)`` instead (give ``num_features``
            and, if it takes none, ``extractor_kwargs={}``).
        clip_frames: frames per sample; a video shorter than this is one sample of its own length; ``None``: the
            whole video is one sample.
        size: spatial side fed to the detector.
    """

    def __init__(
        self,
        i3d_weights: str | os.PathLike[str] | None = None,
        *,
        feature_extractor: nn.Module | Callable[..., torch.Tensor] | None = None,
        num_features: int = 400,
        extractor_kwargs: Mapping[str, Any] | None = None,
        download: bool = False,
        clip_frames: int | None = 16,
        size: int = 224,
        value_range: str = "01",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_features, value_range=value_range, **kwargs)
        if feature_extractor is None:
            feature_extractor = load_i3d(i3d_weights, download=download)
            extractor_kwargs = dict(I3D_KWARGS) if extractor_kwargs is None else extractor_kwargs
        self.extractor = feature_extractor
        self.extractor_kwargs = dict(extractor_kwargs or {})
        if clip_frames is not None and clip_frames < 1:
            raise InputError(f"clip_frames must be >= 1 or None, got {clip_frames}")
        self.clip_frames = clip_frames
        self.size = int(size)

    def clips(self, video: torch.Tensor) -> torch.Tensor:
        """One video ``(3, F, H, W)`` in [0, 1] -> detector input ``(K, 3, T, size, size)`` in [-1, 1]."""
        frames = video.shape[1]
        t = frames if self.clip_frames is None else min(self.clip_frames, frames)
        k = frames // t
        x = video[:, : k * t].permute(1, 0, 2, 3)  # (k*t, 3, H, W)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.reshape(k, t, 3, self.size, self.size).permute(0, 2, 1, 3, 4)  # (K, 3, T, S, S)
        return x * 2.0 - 1.0

    def features(self, video: torch.Tensor) -> torch.Tensor:
        x = self.clips(video).to(self.real_sum.device)  # (K, 3, T, S, S)
        return self.extractor(x, **self.extractor_kwargs).reshape(x.shape[0], -1)  # (K, D)
