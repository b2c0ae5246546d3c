"""Visemes, co-articulation and motion trajectories."""

from __future__ import annotations

import numpy as np

from fantasytalking.data.synthtalk.animate import motion_track, mouth_track, viseme


def test_viseme_table() -> None:
    for pause in ("_", "_:", "_!", ""):
        assert viseme(pause)[0] == 0.0
    for closed in ("p", "b", "m"):
        assert viseme(closed)[0] == 0.0
    assert viseme("a")[0] == 1.0 and viseme("aI")[0] > 0.8
    assert viseme("u:")[2] > 0.8  # rounded
    assert viseme("i:")[1] > viseme("u:")[1]  # spread vs round
    assert 0 < viseme("unknown-zz")[0] < 0.5


def test_silence_keeps_the_mouth_closed() -> None:
    silent = mouth_track([("_", 0.0, 2.0)], 33, 23.0)
    assert np.all(silent.open == 0) and np.all(silent.speaking == 0)
    # speech, a 0.6 s pause, speech: the pause's middle frames are exactly closed
    timeline = [("a", 0.0, 0.4), ("_", 0.4, 1.0), ("a", 1.0, 1.43)]
    m = mouth_track(timeline, 33, 23.0)
    t = np.arange(33) / 23.0
    inside = (t > 0.4 + 0.07) & (t + 1 / 23 < 1.0 - 0.07)
    assert inside.sum() >= 5
    assert np.all(m.open[inside] == 0)
    assert m.open[(t > 0.1) & (t < 0.3)].min() > 0.9


def test_coarticulation_blends_neighbours() -> None:
    m = mouth_track([("a", 0.0, 0.3), ("m", 0.3, 0.34), ("a", 0.34, 0.7)], 17, 23.0)
    # a 40 ms bilabial between open vowels is not fully closed (blended), but clearly lower
    j = round(0.32 * 23)
    assert 0.0 < m.open[j] < 0.9


def test_motion_scales_with_intensity() -> None:
    tracks = [motion_track(33, 23.0, k, np.random.default_rng(5)) for k in (0.0, 0.1, 0.5, 1.0)]
    spread = [np.std(t.head_dx) + np.std(t.head_dy) for t in tracks]
    assert spread[0] == 0 and spread[1] < spread[2] < spread[3]
    np.testing.assert_allclose(tracks[3].head_dx * 0.5, tracks[2].head_dx, atol=1e-6)  # same path, scaled
