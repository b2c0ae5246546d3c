"""SynthTalk measures on pixels: mouth opening vs truth, closed threshold, motion and identity."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fantasytalking.data.synthtalk import SynthConfig, espeak_available, make_clip
from fantasytalking.errors import InputError


def _load_metrics() -> Any:
    """The measures module, by path when the metrics package is not importable yet."""
    try:
        from fantasytalking.metrics import synthtalk

        return synthtalk
    except ImportError:  # pragma: no cover
        path = Path(__file__).parents[2] / "src/fantasytalking/metrics/synthtalk.py"
        spec = importlib.util.spec_from_file_location("synthtalk_metrics", path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod


M = _load_metrics()
pytestmark = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed")
CFG = SynthConfig(size=64, num_frames=33, seed=11)


def test_measured_opening_tracks_the_truth() -> None:
    for i in range(4):
        clip = make_clip(CFG, i)
        measured = M.mouth_opening(clip.frames)
        assert measured.shape == (33,)
        assert M.lipsync_correlation(measured, clip.column("open")) > 0.9
        # same unit as the truth gap (fraction of the height), within a pixel (sub-pixel gaps blur into the lips)
        np.testing.assert_allclose(measured, clip.column("gap"), atol=1.0 / 64 + 1e-3)
        silent = clip.column("open") == 0
        assert M.mouth_closed_fraction(measured, silent) == 1.0


def test_silent_video_measures_closed_and_scores() -> None:
    clip = make_clip(CFG, 1, silent=True)
    measured = M.mouth_opening(clip.frames)
    assert np.all(measured < M.MOUTH_CLOSED_THRESHOLD)
    scores = M.score_synthtalk(clip.frames, clip.column("open"), reference=clip.identity)
    assert scores.closed_in_silence == 1.0 and scores.lipsync == 0.0


def test_tensor_input_matches_uint8() -> None:
    import torch

    clip = make_clip(CFG, 0)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, N, H, W)
    np.testing.assert_allclose(M.mouth_opening(video), M.mouth_opening(clip.frames), atol=1e-6)


def test_motion_increases_with_requested_intensity() -> None:
    for i in (0, 1):
        values = [M.head_motion(make_clip(CFG, i, motion=k).frames) for k in (0.1, 0.5, 1.0)]
        assert values[0] < values[1] < values[2]


def test_identity_error_same_vs_other() -> None:
    a = make_clip(CFG, 0)
    same = make_clip(CFG, 5, identity=a.identity)
    other = make_clip(CFG, 6)
    assert other.identity != a.identity
    e_same = M.identity_error(same.frames, a.frames[0])
    e_truth = M.identity_error(a.frames, a.identity)
    e_other = M.identity_error(other.frames, a.frames[0])
    assert e_same < 0.03 and e_truth < 0.03
    assert e_other > 0.08 and e_other > 4 * e_same


def test_identity_error_over_frames_skips_the_first_frame_and_averages_the_picks() -> None:
    a, other = make_clip(CFG, 0), make_clip(CFG, 6)
    # frame 0 is the reference's own person, every later frame another one: only the later frames count
    video = np.concatenate([a.frames[:1], other.frames[1:]])
    picks = video[4::4]
    expected = np.mean([M.identity_error(f[None], a.frames[0]) for f in picks])
    assert M.identity_error_over_frames(video, a.frames[0], stride=4) == pytest.approx(expected)
    assert M.identity_error_over_frames(video, a.frames[0], stride=4) > 0.08
    short = video[:3]  # shorter than the stride: its last frame
    assert M.identity_error_over_frames(short, a.frames[0], stride=4) == pytest.approx(
        M.identity_error(short[-1:], a.frames[0]))


def test_correlation_edge_cases() -> None:
    assert M.lipsync_correlation([0, 0, 0], [0, 1, 0]) == 0.0
    assert M.lipsync_correlation([0, 1, 2], [0, 2, 4]) == pytest.approx(1.0)
    with pytest.raises(InputError):
        M.lipsync_correlation([0, 1], [0, 1, 2])


def test_long_silences_keep_only_runs_longer_than_the_limit() -> None:
    from fantasytalking.metrics.synthtalk import long_silences

    # 10 fps: a 0.3 s limit keeps runs of 4+ frames (more than 3), drops the 3-frame pause.
    silent = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    expected = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=bool)
    np.testing.assert_array_equal(long_silences(silent, fps=10, min_seconds=0.3), expected)
    assert not long_silences(np.zeros(5, bool), fps=10).any()
