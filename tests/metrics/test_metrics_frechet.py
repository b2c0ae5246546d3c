"""Frechet distance and the FID/FVD feature statistics against values computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from fantasytalking.errors import InputError
from fantasytalking.metrics import FID, FVD, frechet_distance, gaussian_from_sums


def _scipy_reference(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    # pytorch-fid's formula: scipy sqrtm of the (non-symmetric) product.
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_one_dimensional_closed_form() -> None:
    # N(1, 2^2) vs N(4, 3^2): (1 - 4)^2 + (2 - 3)^2 = 10
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([4.0]), np.array([[9.0]])) == pytest.approx(
        10.0
    )


def test_diagonal_closed_form() -> None:
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # |mu diff|^2 + sum (sqrt a - sqrt b)^2 = 10
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_general_matches_scipy_and_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.5 + 0.3
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert d == pytest.approx(_scipy_reference(mu1, s1, mu2, s2), rel=1e-8)
    assert d == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_singular_covariances_stay_real() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))  # rank 2 covariances in 8-d
    d = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(d) and d >= 0


def test_gaussian_from_sums_matches_numpy() -> None:
    f = torch.randn(20, 5, dtype=torch.float64)
    mu, cov = gaussian_from_sums(f.sum(0), f.T @ f, 20)
    np.testing.assert_allclose(mu, f.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)
    with pytest.raises(InputError):
        gaussian_from_sums(f[:1].sum(0), f[:1].T @ f[:1], 1)


class MeanColour(nn.Module):
    """(N, 3, H, W) -> (N, 3): a transparent 'feature extractor' for checking the bookkeeping."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_fid_bookkeeping_with_plugged_extractor() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 4, 8, 8, generator=g)  # 8 frames in all
    fake = torch.rand(3, 3, 2, 8, 8, generator=g) * 0.5  # 6 frames
    fid = FID(feature_extractor=MeanColour(), num_features=3)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    rf = real.permute(0, 2, 1, 3, 4).reshape(-1, 3, 8, 8).mean(dim=(2, 3)).double().numpy()
    ff = fake.permute(0, 2, 1, 3, 4).reshape(-1, 3, 8, 8).mean(dim=(2, 3)).double().numpy()
    expected = _scipy_reference(rf.mean(0), np.cov(rf, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert float(fid.compute()) == pytest.approx(expected, rel=1e-6)


def test_value_range_minus_one_one_equals_zero_one() -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(2, 3, 3, 8, 8, generator=g), torch.rand(2, 3, 3, 8, 8, generator=g)
    a = FID(feature_extractor=MeanColour(), num_features=3)
    b = FID(feature_extractor=MeanColour(), num_features=3, value_range="11")
    a.update(real, real=True), a.update(fake, real=False)
    b.update(real * 2 - 1, real=True), b.update(fake * 2 - 1, real=False)
    assert float(a.compute()) == pytest.approx(float(b.compute()), rel=1e-6)


class ClipMean(nn.Module):
    """TorchScript-able stand-in with the I3D file's keyword arguments: (B, 3, T, H, W) -> (B, 3)."""

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        assert not rescale and resize and return_features
        return x.mean(dim=(2, 3, 4))


def test_fvd_loads_torchscript_file_and_uses_clips(tmp_path) -> None:
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(ClipMean()).save(str(path))
    fvd = FVD(i3d_weights=path, num_features=3, clip_frames=4, size=16)
    g = torch.Generator().manual_seed(2)
    real, fake = torch.rand(2, 3, 8, 20, 24, generator=g), torch.rand(2, 3, 9, 20, 24, generator=g)
    fvd.update(real, real=True)
    fvd.update(fake, real=False)
    assert int(fvd.real_n) == 4 and int(fvd.fake_n) == 4  # 2 clips of 4 frames per video (9th frame dropped)
    clips = fvd.clips(real[0])
    assert clips.shape == (2, 3, 4, 16, 16) and float(clips.min()) >= -1 and float(clips.max()) <= 1
    assert np.isfinite(float(fvd.compute()))
