"""FID on video frames with pytorch-fid's InceptionV3 (pool3, 2048-d), as a ``torchmetrics.Metric``.

Usage::

    fid = FID(inception_weights="pt_inception-2015-12-05-6726825d.pth")
    fid.update(real_videos, real=True)   # (B, 3, F, H, W) in [0, 1], or video paths
    fid.update(fake_videos, real=False)
    fid.compute()                        # tensor(float64)

Each frame (every ``frame_stride``-th) is one sample. Frames are resized to 299x299 bilinearly inside
pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``, as in ``python -m pytorch_fid``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fantasytalking.metrics.frechet import FrechetFeatureMetric
from fantasytalking.metrics.weights import resolve_weights

__all__ = ["FID", "build_fid_inception"]


@contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


class _InceptionPool3(nn.Module):
    """pytorch-fid's InceptionV3 returning ``(N, 2048)`` pool3 features of ``(N, 3, H, W)`` frames in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)[0].flatten(1)  # (N, 2048)


def build_fid_inception(
    weights: str | os.PathLike[str] | None = None, *, pretrained: bool = True, download: bool = False
) -> nn.Module:
    """pytorch-fid's InceptionV3 (pool3) with the FID weights from ``weights`` / the hub cache / a download.

    ``pretrained=False`` builds it at random weights (tests only: the values mean nothing).
    """
    import pytorch_fid.inception as pfi

    if pretrained:
        path = resolve_weights("inception", weights, download=download)

        def loader(*_: Any, **__: Any) -> dict[str, torch.Tensor]:
            return torch.load(path, map_location="cpu", weights_only=True)

        with _patched(pfi, "load_state_dict_from_url", loader):
            net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    else:

        def random_fid_inception() -> nn.Module:
            inception = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
            inception.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
            inception.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
            inception.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
            inception.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
            inception.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
            inception.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
            inception.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
            inception.Mixed_7b = pfi.FIDInceptionE_1(1280)
            inception.Mixed_7c = pfi.FIDInceptionE_2(2048)
            return inception

        with _patched(pfi, "fid_inception_v3", random_fid_inception):
            net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return _InceptionPool3(net).eval()


class FID(FrechetFeatureMetric):
    """Frechet Inception Distance over video frames.

    Args:
        inception_weights: path to ``pt_inception-2015-12-05-6726825d.pth`` (default: the torch hub cache, then a
            download when ``download=True``).
        feature_extractor: any module ``(N, 3, H, W) in [0, 1] -> (N, D)`` instead of Inception (``num_features``
            must then be given).
        frame_stride: use every ``k``-th frame of each video.
        batch_size: frames per forward pass.
        value_range: ``"01"`` / ``"11"`` / ``"auto"`` for float tensors (see :mod:`fantasytalking.metrics.video`).
    """

    def __init__(
        self,
        inception_weights: str | os.PathLike[str] | None = None,
        *,
        feature_extractor: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None,
        num_features: int = 2048,
        pretrained: bool = True,
        download: bool = False,
        frame_stride: int = 1,
        batch_size: int = 32,
        value_range: str = "01",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_features, value_range=value_range, **kwargs)
        if feature_extractor is None:
            feature_extractor = build_fid_inception(inception_weights, pretrained=pretrained, download=download)
        self.extractor = feature_extractor
        self.frame_stride = max(1, int(frame_stride))
        self.batch_size = max(1, int(batch_size))

    def features(self, video: torch.Tensor) -> torch.Tensor:
        frames = video[:, :: self.frame_stride].permute(1, 0, 2, 3)  # (N, 3, H, W)
        device = self.real_sum.device
        out = [
            self.extractor(frames[i : i + self.batch_size].to(device)).reshape(-1, self.num_features)
            for i in range(0, frames.shape[0], self.batch_size)
        ]
        return torch.cat(out)  # (N, D)
