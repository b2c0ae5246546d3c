"""Motion intensities: exact formula, monotone in motion, invariant to resolution, pluggable pose source."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fantasytalking.errors import InputError
from fantasytalking.face import (
    HeadShoulderProxy,
    PoseSource,
    body_intensity,
    facial_intensity,
    intensity_stats,
    normalise_intensity,
    normalised_variance,
)


def _face(seed: int = 0) -> np.ndarray:
    """A plausible (68, 2) face: points in a 100 x 120 px box."""
    rng = np.random.default_rng(seed)
    return (rng.random((68, 2)) * [100, 120] + [200, 150]).astype(np.float64)


def _talking(amplitude: float, frames: int = 33, seed: int = 1) -> np.ndarray:
    """(N, 68, 2): the face with the mouth (48-67) opening and the head swaying by ``amplitude`` pixels."""
    base = _face()
    t = np.arange(frames)
    seq = np.repeat(base[None], frames, axis=0)
    seq[:, 48:68, 1] += amplitude * np.sin(t / 2.0)[:, None] * np.linspace(-1, 1, 20)[None]
    seq += amplitude * 0.3 * np.stack([np.sin(t / 5.0), np.cos(t / 7.0)], -1)[:, None]
    return seq


def test_formula_matches_its_documentation():
    seq = _talking(3.0)
    lo, hi = seq.min(axis=1), seq.max(axis=1)
    size = np.linalg.norm(hi - lo, axis=-1).mean()
    x = seq / size
    expected = ((x - x.mean(axis=0)) ** 2).mean()
    assert facial_intensity(seq) == pytest.approx(expected, rel=1e-12)


def test_facial_intensity_grows_with_motion_and_is_zero_when_still():
    still = np.repeat(_face()[None], 17, axis=0)
    assert facial_intensity(still) == pytest.approx(0.0, abs=1e-20)
    values = [facial_intensity(_talking(a)) for a in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a < b for a, b in itertools.pairwise(values))
    # variance: twice the motion gives about four times the value
    assert values[3] / values[2] == pytest.approx(4.0, rel=0.05)


def test_facial_intensity_ignores_resolution_and_position():
    seq = _talking(3.0)
    assert facial_intensity(seq * 2.5) == pytest.approx(facial_intensity(seq), rel=1e-9)
    assert facial_intensity(seq + np.array([500, -80])) == pytest.approx(facial_intensity(seq), rel=1e-9)


def test_remove_translation_keeps_only_shape_change():
    base = np.repeat(_face()[None], 20, axis=0)
    sway = base + np.stack([np.linspace(0, 30, 20), np.zeros(20)], -1)[:, None]  # pure translation
    assert facial_intensity(sway) > 1e-3
    assert facial_intensity(sway, remove_translation=True) == pytest.approx(0.0, abs=1e-12)


def test_body_intensity_grows_with_motion_and_handles_missing_joints():
    rng = np.random.default_rng(3)
    skeleton = rng.random((18, 2)) * [300, 500]
    t = np.arange(25)[:, None, None]
    values = []
    for amp in (1.0, 5.0, 20.0):
        joints = skeleton[None] + amp * np.sin(t / 3.0 + np.arange(18)[None, :, None])
        values.append(body_intensity(joints))
    assert values[0] < values[1] < values[2]
    joints = skeleton[None] + 5.0 * np.sin(t / 3.0 + np.arange(18)[None, :, None])
    joints[3, 5] = np.nan  # one joint lost in one frame: left out, the value barely moves
    assert body_intensity(joints) == pytest.approx(values[1], rel=0.1)
    assert body_intensity(np.full((4, 18, 2), np.nan)) == 0.0
    assert body_intensity(skeleton[None]) == 0.0  # one frame: no motion


def test_head_shoulder_proxy_is_a_pose_source_and_sees_head_motion():
    proxy = HeadShoulderProxy()
    assert isinstance(proxy, PoseSource)
    seq = _talking(0.0, frames=10)
    boxes = np.repeat(np.array([[190, 140, 310, 280]], dtype=np.float32), 10, axis=0)
    joints = proxy.joints(np.zeros((10, 8, 8, 3), np.uint8), seq, boxes)
    assert joints.shape == (10, 8, 2) and np.isfinite(joints).all()
    assert body_intensity(joints) == pytest.approx(0.0, abs=1e-20)
    moving = boxes + np.linspace(0, 20, 10)[:, None]  # the head drifts 20 px
    drifting = seq + np.linspace(0, 20, 10)[:, None, None]
    assert body_intensity(proxy.joints(np.zeros((10, 8, 8, 3), np.uint8), drifting, moving)) > 1e-4


def test_stats_and_normalisation():
    stats = intensity_stats([0.0, 1.0, 2.0, 3.0, float("nan"), 4.0])
    assert stats["count"] == 5 and stats["min"] == 0.0 and stats["max"] == 4.0
    assert stats["p1"] == pytest.approx(0.04) and stats["p99"] == pytest.approx(3.96)
    assert normalise_intensity(2.0, stats) == pytest.approx(0.5)
    assert normalise_intensity(-1.0, stats) == 0.0 and normalise_intensity(9.0, stats) == 1.0
    assert normalise_intensity(1.0, {"p1": 1.0, "p99": 1.0}) == 0.5  # one-clip dataset
    assert stats["quantiles"] == pytest.approx(list(np.quantile([0.0, 1.0, 2.0, 3.0, 4.0], np.linspace(0, 1, 21))))
    assert stats["quantiles"][0] == 0.0 and stats["quantiles"][-1] == 4.0 and stats["quantiles"][10] == 2.0
    assert intensity_stats([])["count"] == 0 and intensity_stats([])["quantiles"] is None
    with pytest.raises(InputError):
        normalise_intensity(1.0, {"p1": None, "p99": None})
    with pytest.raises(InputError):
        normalised_variance(np.zeros((3, 4)))
