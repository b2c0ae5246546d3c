"""SyncNet's numerical core against hand-computed values, and the network at random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fantasytalking.errors import WeightsError
from fantasytalking.metrics import SyncNet, SyncNetScore, load_syncnet, mfcc, offset_distances, sync_from_distances
from fantasytalking.metrics.syncnet import resample_frames, syncnet_face_crops


def test_confidence_from_hand_matrix() -> None:
    # mean over frames: [4, 1, 3]; min 1 at k = 1 -> offset 1 - 1 = 0; median 3 -> Sync-C 2, Sync-D 1
    r = sync_from_distances(np.array([[3.0, 1.0, 2.0], [5.0, 1.0, 4.0]]))
    assert (r.offset, r.confidence, r.min_dist) == (0, pytest.approx(2.0), pytest.approx(1.0))
    # one frame, vshift 2: min at k = 0 -> offset +2; median 3 -> Sync-C 2
    r = sync_from_distances(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]))
    assert (r.offset, r.confidence, r.min_dist) == (2, pytest.approx(2.0), pytest.approx(1.0))


def test_offset_distances_by_hand() -> None:
    v = np.array([[0.0, 0.0], [1.0, 0.0]])
    a = np.array([[0.0, 0.0], [1.0, 0.0]])
    # audio padded with one zero row each side: [0,0], [0,0], [1,0], [0,0]
    d = offset_distances(v, a, vshift=1)
    np.testing.assert_allclose(d, [[0, 0, 1], [1, 0, 1]], atol=1e-5)
    r = sync_from_distances(d)
    assert r.offset == 0 and r.min_dist == pytest.approx(0, abs=1e-5) and r.confidence == pytest.approx(0.5, abs=1e-5)


def test_offset_distances_match_calc_pdist() -> None:
    g = torch.Generator().manual_seed(0)
    v, a, vshift = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g), 4
    win = 2 * vshift + 1
    ap = F.pad(a, (0, 0, vshift, vshift))  # syncnet_python's calc_pdist, written out
    ref = torch.stack([F.pairwise_distance(v[[i], :].repeat(win, 1), ap[i : i + win, :]) for i in range(len(v))])
    np.testing.assert_allclose(offset_distances(v, a, vshift), ref.double().numpy(), rtol=1e-5)


def test_shifted_audio_is_found() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(30, 16, generator=g)
    v = torch.roll(a, shifts=3, dims=0)  # video lags the audio by 3 windows
    r = sync_from_distances(offset_distances(v, a, 15))
    assert r.offset == 3 and r.confidence > 1.0


def test_mfcc_frames_and_energy() -> None:
    sig = np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 1000
    c = mfcc(sig)
    assert c.shape == (99, 13)  # 1 + ceil((16000 - 400) / 160) windows, python_speech_features' count
    frame = sig[160:560] - 0.97 * sig[159:559]  # second window, pre-emphasised
    energy = (np.abs(np.fft.rfft(frame, 512)) ** 2 / 512).sum()
    assert c[1, 0] == pytest.approx(np.log(energy), rel=1e-5)


def test_network_shapes_random_weights() -> None:
    net = SyncNet().eval()
    with torch.no_grad():
        assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)


def test_weights_roundtrip_and_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match=r"syncnet_v2\.model.*--syncnet"):
        load_syncnet(None)
    path = tmp_path / "syncnet_v2.model"
    torch.save(SyncNet().state_dict(), path)
    assert isinstance(load_syncnet(path), SyncNet)


def test_score_crops_random_weights() -> None:
    torch.manual_seed(0)
    metric = SyncNetScore(network=SyncNet(), landmarker=object())
    crops = np.random.default_rng(0).uniform(0, 255, (9, 224, 224, 3)).astype(np.float32)
    audio = np.random.default_rng(1).normal(size=16000 * 9 // 25).astype(np.float32) * 0.1
    r = metric.score_crops(crops, audio)
    assert len(r.mean_dists) == 31 and np.isfinite(r.confidence) and r.confidence >= 0 and -15 <= r.offset <= 15


def test_crop_geometry_and_resampling() -> None:
    frames = np.zeros((3, 100, 120, 3), np.uint8)
    boxes = np.tile(np.array([[40, 30, 80, 70]], np.float32), (3, 1))
    crops = syncnet_face_crops(frames, boxes, size=32)
    assert crops.shape == (3, 32, 32, 3) and crops.dtype == np.float32
    assert len(resample_frames(np.arange(23), 23.0, 25.0)) == 25


def test_mfcc_matches_python_speech_features_when_installed() -> None:
    psf = pytest.importorskip("python_speech_features")
    sig = (np.random.default_rng(0).normal(size=8000) * 3000).astype(np.int16)
    np.testing.assert_allclose(mfcc(sig.astype(np.float64)), psf.mfcc(sig, 16000), atol=1e-4)


def test_windows_counted_as_syncnet_python() -> None:
    """min(frames, floor(samples / 640)) usable frames, windows 0 .. usable - 5 (syncnet_python's calc_pdist loop)."""
    from torch import nn

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lip_rows, self.audio_shapes = 0, set()

        def forward_lip(self, v: torch.Tensor) -> torch.Tensor:
            self.lip_rows += v.shape[0]
            return torch.randn(v.shape[0], 8)

        def forward_aud(self, a: torch.Tensor) -> torch.Tensor:
            self.audio_shapes.add(tuple(a.shape[1:]))
            return torch.randn(a.shape[0], 8)

    for frames, samples, windows in ((9, 640 * 9, 4), (12, 640 * 9 + 639, 4), (7, 640 * 20, 2)):
        net = Counting()
        metric = SyncNetScore(network=net, landmarker=object(), vshift=1)  # type: ignore[arg-type]
        metric.score_crops(np.zeros((frames, 4, 4, 3), np.float32), np.zeros(samples, np.float32))
        assert net.lip_rows == windows and net.audio_shapes == {(1, 13, 20)}
