"""SynthTalk measures on inputs of every accepted form, and a clear error (never a made-up score) on bad ones.

The videos are rendered poses (no speech, so no espeak-ng needed): the mouth opens and closes over the frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fantasytalking.data.synthtalk import FacePose, random_identity, render_frame
from fantasytalking.errors import InputError
from fantasytalking.metrics import synthtalk as M

OPEN = np.array([0.0, 0.0, 0.3, 0.8, 1.0, 0.6, 0.2, 0.0, 0.0, 0.5, 0.9, 0.4], np.float32)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    ident = random_identity(np.random.default_rng(3))
    return np.stack([render_frame(ident, FacePose(open=float(o)), 64)[0] for o in OPEN])  # uint8 (N, 64, 64, 3)


def test_rendered_opening_is_measured(frames: np.ndarray) -> None:
    measured = M.mouth_opening(frames)
    assert M.lipsync_correlation(measured, OPEN) > 0.9
    assert np.all(measured[OPEN == 0] < M.MOUTH_CLOSED_THRESHOLD) and measured.max() > 0.03


def test_uint8_tensors_in_every_layout_read_as_the_frames(frames: np.ndarray) -> None:
    """A uint8 tensor keeps its 0-255 values (it was made float and read as [-1, 1]: a white video, opening 0)."""
    want = M.mouth_opening(frames)
    t = torch.from_numpy(frames)
    for video in (t, t.permute(3, 0, 1, 2), t.permute(0, 3, 1, 2)):  # (N, H, W, 3), (3, N, H, W), (N, 3, H, W)
        np.testing.assert_array_equal(M.as_frames(video), frames)
        np.testing.assert_allclose(M.mouth_opening(video), want, atol=1e-6)
    float11 = t.permute(3, 0, 1, 2).float() / 127.5 - 1.0  # floats are [-1, 1]
    np.testing.assert_allclose(M.mouth_opening(float11), want, atol=1e-6)


def test_frames_that_cannot_be_read_are_refused_not_scored(frames: np.ndarray) -> None:
    """0-255 floats or ints, NaN and empty videos were clipped to a blank video: opening 0, lip sync 0, "closed"."""
    with pytest.raises(InputError, match=r"read as \[-1, 1\].*pass uint8"):
        M.mouth_opening(frames.astype(np.float32))  # 0-255 as float
    with pytest.raises(InputError, match=r"read as \[-1, 1\]"):
        M.score_synthtalk(frames.astype(np.int64), OPEN)
    bad = frames.astype(np.float32) / 127.5 - 1.0
    bad[3, 5, 5, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        M.as_frames(bad)
    with pytest.raises(InputError, match="no pixels"):
        M.mouth_opening(frames[:0])
    with pytest.raises(InputError, match="3-channel"):
        M.mouth_opening(frames[..., 0])  # grayscale (N, H, W)
    # a decoder's slight overshoot beyond [-1, 1] is still read (clipped)
    over = np.clip(frames.astype(np.float32) / 127.5 - 1.0, -1, 1) * 1.02
    np.testing.assert_allclose(M.mouth_opening(over), M.mouth_opening(frames), atol=0.01)


def test_score_refuses_mismatched_or_non_finite_truth(frames: np.ndarray) -> None:
    silent = OPEN == 0
    with pytest.raises(InputError, match="silent has 5 frames"):
        M.score_synthtalk(frames, OPEN, silent=silent[:5])  # was an IndexError (or silently cut when longer)
    with pytest.raises(InputError, match="silent has 24 frames"):
        M.score_synthtalk(frames, OPEN, silent=np.r_[silent, silent], fps=10)
    with pytest.raises(InputError, match="NaN or inf"):
        M.score_synthtalk(frames, np.r_[OPEN[:-1], np.nan])  # was a lip sync of NaN
    with pytest.raises(InputError, match="same length"):
        M.mouth_closed_fraction(M.mouth_opening(frames), silent[:5])
    with pytest.raises(InputError, match="frame rate must be positive"):
        M.long_silences(silent, fps=0)


def test_no_silent_frame_gives_no_closed_score(frames: np.ndarray) -> None:
    """Without fps every silent frame counts; with none, "closed in silence" is None (it was 1.0, made up)."""
    speaking = np.zeros(len(OPEN), bool)
    assert M.score_synthtalk(frames, OPEN, silent=speaking).closed_in_silence is None
    assert M.score_synthtalk(frames, OPEN, silent=speaking, fps=10).closed_in_silence is None
    assert M.score_synthtalk(frames, OPEN).closed_in_silence == 1.0  # the truth's closed frames measure closed


def test_identity_reference_and_stride_are_checked(frames: np.ndarray) -> None:
    assert M.identity_error(frames, M.identity_features(frames)) == 0.0
    with pytest.raises(InputError, match="14 values"):
        M.identity_error(frames, np.zeros(1))  # was broadcast: a made-up error
    with pytest.raises(InputError, match="no identity reference"):
        M.identity_error(frames, None)
    with pytest.raises(InputError, match="stride"):
        M.identity_error_over_frames(frames, frames[0], stride=0)  # was ZeroDivisionError


def test_metric_refuses_non_finite_scores_and_keeps_its_state() -> None:
    """A NaN score made the metric's whole mean NaN, which the reports then leave out."""
    from fantasytalking.metrics import SynthTalkMetric

    metric = SynthTalkMetric(fps=10)
    good = {"lipsync": 0.5, "closed_in_silence": None, "identity_error": None, "head_motion": 0.1,
            "motion_energy": 0.01, "requested_motion": 0.3}  # fmt: skip
    metric.update(scores=[good])
    for bad in ({**good, "lipsync": float("nan")}, {**good, "requested_motion": float("inf")},
                {**good, "head_motion": None}):  # fmt: skip
        with pytest.raises(InputError, match=r"finite|head_motion"):
            metric.update(scores=[bad])
    out = metric.compute()
    assert float(out["lipsync"]) == 0.5 and float(out["head_motion"]) == pytest.approx(0.1)
    assert int(metric.counts[0]) == 1 and float(metric.pairs[0]) == 1.0
