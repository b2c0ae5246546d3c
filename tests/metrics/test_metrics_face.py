"""Landmark-based metrics: pure functions by hand, then the metrics on a real portrait (skimage's astronaut)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from fantasytalking.metrics import (
    IdentityConsistency,
    LandmarkLipSync,
    MotionDynamics,
    cosine_to_reference,
    lagged_correlation,
    landmark_dynamics,
    mouth_opening_ratio,
    speech_envelope,
)


def _face(opening: float = 0.0) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[:, 0] = np.arange(68)  # distinct points
    lm[36], lm[45] = (0.0, 0.0), (40.0, 0.0)  # eye corners 40 px apart
    for top, bottom in ((61, 67), (62, 66), (63, 65)):
        lm[top], lm[bottom] = (20.0, 50.0), (20.0, 50.0 + opening)
    return lm


def test_mouth_opening_ratio_by_hand() -> None:
    lm = np.stack([_face(0.0), _face(8.0)])
    np.testing.assert_allclose(mouth_opening_ratio(lm), [0.0, 0.2])


def test_speech_envelope_and_lagged_correlation() -> None:
    env = speech_envelope(np.full(1600, 0.5), 1600, 10.0, 10)  # 10 frames of a constant 0.5
    np.testing.assert_allclose(env, 0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = np.roll(x, 2)  # y[t + 2] = x[t]
    corr, lag = lagged_correlation(x, y, max_lag=3)
    assert lag == 2 and corr == pytest.approx(1.0)
    assert lagged_correlation(np.ones(10), x[:10]) == (0.0, -3)  # constant side -> 0 for every lag


def test_landmark_dynamics_by_hand() -> None:
    base = _face(4.0)
    still = np.stack([base] * 5)
    d = landmark_dynamics(still, 25.0)
    assert d == pytest.approx({"facial_intensity": 0.0, "landmark_speed": 0.0, "expression_speed": 0.0}, abs=1e-12)
    moving = np.stack([base + np.array([2.0 * t, 0.0]) for t in range(5)])  # 2 px / frame, eye distance 40
    d = landmark_dynamics(moving, 25.0)
    assert d["landmark_speed"] == pytest.approx(2.0 / 40.0 * 25.0)
    assert d["expression_speed"] == pytest.approx(0.0, abs=1e-9)


def test_cosine_to_reference() -> None:
    np.testing.assert_allclose(
        cosine_to_reference(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([2.0, 0.0])), [1.0, 2**-0.5]
    )


@pytest.fixture(scope="module")
def portrait_video() -> torch.Tensor:
    img = astronaut()[40:296, 96:352]  # (256, 256, 3), face near the centre
    frames = np.stack([np.roll(img, s, axis=1) for s in (0, 1, 2, 3, 4, 5)])  # slow pan
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0  # (1, 3, 6, 256, 256)


def test_metrics_on_portrait(portrait_video: torch.Tensor) -> None:
    from fantasytalking.face import DlibLandmarker

    lmk = DlibLandmarker()
    idc = IdentityConsistency(landmarker=lmk, frame_stride=3)
    idc.update(portrait_video, portrait_video[:, :, 0])
    assert float(idc.compute()) > 0.95

    dyn = MotionDynamics(landmarker=lmk, fps=25.0)
    out = dyn(portrait_video)
    assert set(out) == {"facial_intensity", "landmark_speed", "expression_speed"}
    assert 0 < float(out["landmark_speed"]) < 1.0  # about 1 px / frame in face sizes per second

    lip = LandmarkLipSync(landmarker=lmk)
    audio = torch.randn(1, 16000 * 6 // 25) * 0.1
    res = lip(portrait_video, audio, fps=25.0, sample_rate=16000)
    assert -1.0 <= float(res["lipsync_corr"]) <= 1.0 and int(lip.count) == 1


def test_syncnet_score_end_to_end_random_weights(portrait_video: torch.Tensor) -> None:
    from fantasytalking.face import DlibLandmarker
    from fantasytalking.metrics import SyncNet, SyncNetScore

    torch.manual_seed(0)
    video = torch.cat([portrait_video, portrait_video[:, :, :3]], dim=2)  # (1, 3, 9, 256, 256)
    sync = SyncNetScore(network=SyncNet(), landmarker=DlibLandmarker(), vshift=2)
    out = sync(video, torch.randn(1, 16000 * 9 // 25 + 800) * 0.1, fps=25.0)
    assert set(out) == {"sync_c", "sync_d", "abs_offset"} and float(out["sync_c"]) >= 0
