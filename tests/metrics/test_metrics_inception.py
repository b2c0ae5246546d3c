"""pytorch-fid's InceptionV3 at random weights: shapes; a missing weight file names what to fetch."""

from __future__ import annotations

import pytest
import torch

from fantasytalking.errors import WeightsError
from fantasytalking.metrics import FID, FVD, build_fid_inception


def test_random_inception_pool3_shape() -> None:
    torch.manual_seed(0)
    net = build_fid_inception(pretrained=False)
    with torch.no_grad():
        assert net(torch.rand(2, 3, 40, 56)).shape == (2, 2048)


def test_missing_weights_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*--inception") as err:
        FID()
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match=r"i3d_torchscript\.pt.*--i3d"):
        FVD()
    with pytest.raises(WeightsError, match="not found"):
        FID(tmp_path / "nope.pth")
