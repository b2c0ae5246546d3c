"""LPIPS between generated and reference videos, frame by frame (the ``lpips`` package, AlexNet trunk).

The ``lpips`` package ships its calibrated linear layers; its AlexNet trunk is torchvision's ImageNet download
(``alexnet-owt-7be5be79.pth``). Give that file with ``backbone_weights=`` (CLI ``--lpips-backbone``), keep it in the
torch hub cache, or allow ``download=True``; ``pretrained_backbone=False`` (random trunk) is for tests only.

Usage::

    lp = LPIPSVideo(backbone_weights="alexnet-owt-7be5be79.pth")
    lp.update(fake_videos, real_videos)   # (B, 3, F, H, W) in [0, 1] (or paths); frames paired by index
    lp.compute()                          # mean LPIPS over all frames (lower is better)
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from fantasytalking.errors import WeightsError
from fantasytalking.metrics.weights import resolve_weights

__all__ = ["LPIPSVideo", "build_lpips"]


def _check_linear_layers(model: torch.nn.Module, package_file: str) -> None:
    """The lpips package loads its calibrated linear layers without a strict key check (its file has no trunk): check here
    that every ``lin*`` tensor of the model came from that file, so a damaged install cannot pass unnoticed."""
    import re
    from pathlib import Path

    path = Path(package_file).parent / "weights" / f"v{getattr(model, 'version', '0.1')}" / "alex.pth"
    try:
        shipped = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing or unreadable file
        reason = " ".join(str(err).split()) or type(err).__name__
        raise WeightsError(f"cannot read the lpips package's linear layers {path} ({reason}); "
                           "reinstall it: pip install --force-reinstall lpips") from None  # fmt: skip
    own = {k: v for k, v in model.state_dict().items() if re.match(r"lin\d+\.", k)}
    if set(own) != set(shipped) or any(not torch.equal(own[k], shipped[k]) for k in own):
        raise WeightsError(f"the lpips package's linear layers {path} do not match its LPIPS model "
                           f"({sorted(set(own) ^ set(shipped))[:3]}); reinstall it: pip install --force-reinstall lpips")  # fmt: skip


def build_lpips(
    backbone_weights: str | os.PathLike[str] | None = None,
    *,
    pretrained_backbone: bool = True,
    download: bool = False,
) -> torch.nn.Module:
    """``lpips.LPIPS(net="alex")`` with the trunk from a local torchvision AlexNet file (never a silent download)."""
    import lpips

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # lpips prints its setup
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecated `pretrained=` inside lpips
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    _check_linear_layers(model, lpips.__file__)
    if pretrained_backbone:
        path = resolve_weights("alexnet", backbone_weights, download=download)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            trunk = {}
            for name, child in model.net.named_children():  # slice1..slice5, children named by AlexNet index
                if not name.startswith("slice"):
                    continue
                for idx, _ in child.named_children():
                    for p in ("weight", "bias"):
                        key = f"features.{idx}.{p}"
                        if key in state:
                            trunk[f"{name}.{idx}.{p}"] = state[key]
            missing = set(model.net.state_dict()) - set(trunk)
            if missing:
                raise KeyError(f"missing {sorted(missing)[:3]}")
            model.net.load_state_dict(trunk, strict=True)
        except Exception as err:
            raise WeightsError(f"{path} is not torchvision's AlexNet state_dict ({err}); re-download it") from err
    return model.eval()


class LPIPSVideo(Metric):
    """Mean LPIPS over paired frames of generated and reference videos (lower is better)."""

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(
        self,
        backbone_weights: str | os.PathLike[str] | None = None,
        *,
        network: torch.nn.Module | None = None,
        pretrained_backbone: bool = True,
        download: bool = False,
        frame_stride: int = 1,
        batch_size: int = 16,
        value_range: str = "01",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.net = (
            network
            if network is not None
            else build_lpips(backbone_weights, pretrained_backbone=pretrained_backbone, download=download)
        )
        self.frame_stride = max(1, int(frame_stride))
        self.batch_size = max(1, int(batch_size))
        self.value_range = value_range
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, preds: Any, target: Any) -> None:  # type: ignore[override]
        """``preds``/``target``: videos ``(B, 3, F, H, W)`` or paths; the target is resized to the prediction's
        size and both are cut to the shorter length."""
        from fantasytalking.metrics.video import iter_videos

        for fake, real in zip(iter_videos(preds, self.value_range), iter_videos(target, self.value_range), strict=True):
            n = min(fake.shape[1], real.shape[1])
            a = fake[:, : n : self.frame_stride].permute(1, 0, 2, 3)  # (N, 3, H, W)
            b = real[:, : n : self.frame_stride].permute(1, 0, 2, 3)
            if b.shape[-2:] != a.shape[-2:]:
                b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            device = self.total.device
            for i in range(0, a.shape[0], self.batch_size):
                d = self.net(
                    a[i : i + self.batch_size].to(device) * 2 - 1, b[i : i + self.batch_size].to(device) * 2 - 1
                )
                self.total += d.double().sum()
                self.count += d.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)
