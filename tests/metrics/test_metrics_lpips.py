"""LPIPS over paired frames: random trunk for shapes, a local trunk file loads, a missing one names the file."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fantasytalking.errors import WeightsError
from fantasytalking.metrics import LPIPSVideo, build_lpips


def test_identical_zero_different_positive() -> None:
    torch.manual_seed(0)
    m = LPIPSVideo(pretrained_backbone=False)
    x = torch.rand(2, 3, 2, 48, 48)
    assert float(m(x, x)) == pytest.approx(0.0, abs=1e-7)
    m.reset()
    m.update(x, torch.rand(2, 3, 3, 32, 32))  # target resized and cut to 2 frames
    assert int(m.count) == 4 and float(m.compute()) > 0


def test_backbone_from_local_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match=r"alexnet-owt-7be5be79\.pth"):
        build_lpips(None)
    net = torchvision.models.alexnet(weights=None)
    state = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    model = build_lpips(path)
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").bias, state["features.10.bias"])


def test_linear_layers_checked_against_the_package_file(tmp_path) -> None:
    """lpips loads its linear layers with strict=False; build_lpips checks them against the file it shipped."""
    from fantasytalking.metrics.lpips_metric import _check_linear_layers

    model = build_lpips(pretrained_backbone=False)
    fake_pkg = tmp_path / "lpips" / "__init__.py"
    (fake_pkg.parent / "weights" / "v0.1").mkdir(parents=True)
    with pytest.raises(WeightsError, match="reinstall"):
        _check_linear_layers(model, str(fake_pkg))  # no file
    lin = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("lin") and k[3].isdigit()}
    torch.save(lin, fake_pkg.parent / "weights" / "v0.1" / "alex.pth")
    _check_linear_layers(model, str(fake_pkg))  # the same tensors: fine
    key = sorted(lin)[0]
    lin[key] = lin[key] + 1.0
    torch.save(lin, fake_pkg.parent / "weights" / "v0.1" / "alex.pth")
    with pytest.raises(WeightsError, match="do not match"):
        _check_linear_layers(model, str(fake_pkg))
