"""SynthTalk measures on pixels: mouth opening vs truth, closed threshold, motion and identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fantasytalking.data.synthtalk import SynthConfig, espeak_available, make_clip
from fantasytalking.errors import InputError
from fantasytalking.metrics import synthtalk as M

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


def test_shoulders_in_a_shirt_of_the_skins_colour_are_not_the_face() -> None:
    """A shirt within the skin tolerance (0.7% of SynthTalk identities) makes the shoulders a skin-coloured part on
    the frame's bottom row, below the skin box: it is left out, and the mouth, face size and head motion measure as
    with a shirt of another colour (before: the shoulders' rows moved the mouth search's middle below the mouth,
    opening 0 on every frame, and the face was as wide as the shoulders)."""
    from dataclasses import replace

    cfg = replace(CFG, size=96, num_frames=17)  # the demo's size: the shoulders fill the bottom rows
    base = make_clip(cfg, 0)
    skin = np.asarray(base.identity.skin)
    near = tuple(int(v) for v in np.clip(skin + np.array([12, -10, 8]), 0, 255))  # max abs difference 12 < 26
    frames = make_clip(cfg, 0, identity=replace(base.identity, shirt=near)).frames
    assert M.face_regions(base.frames[:1])[0].sum() > 0.05 * cfg.size**2
    assert not M.face_regions(frames)[:, -1].any()  # nothing on the bottom row
    measured = M.mouth_opening(frames)
    assert M.lipsync_correlation(measured, base.column("open")) > 0.9
    np.testing.assert_allclose(measured, M.mouth_opening(base.frames), atol=1e-6)
    # face width and height (the last two features) as with a shirt of another colour
    np.testing.assert_allclose(M.identity_features(frames)[-2:], M.identity_features(base.frames)[-2:])
    assert abs(M.head_motion(frames) - M.head_motion(base.frames)) < 1e-6


def test_silent_video_measures_closed_and_scores() -> None:
    clip = make_clip(CFG, 1, silent=True)
    measured = M.mouth_opening(clip.frames)
    assert np.all(measured < M.MOUTH_CLOSED_THRESHOLD)
    scores = M.score_synthtalk(clip.frames, clip.column("open"), reference=clip.identity)
    # a clip with no speech has nothing to follow: lip sync is not measured (None), not scored 0 or 1
    assert scores.closed_in_silence == 1.0 and scores.lipsync is None
    with pytest.raises(InputError, match="truth opening is constant"):
        M.lipsync_correlation(measured, clip.column("open"))
    # so a silent clip among spoken ones leaves the lip-sync mean to the spoken ones
    from fantasytalking.metrics import SynthTalkMetric

    spoken = make_clip(CFG, 0)
    metric = SynthTalkMetric(fps=CFG.fps)
    metric.update(scores=[M.score_synthtalk(c.frames, c.column("open")).as_dict() for c in (clip, spoken)])
    alone = M.lipsync_correlation(M.mouth_opening(spoken.frames), spoken.column("open"))
    assert float(metric.compute()["lipsync"]) == pytest.approx(alone) and int(metric.counts[0]) == 1


def test_tensor_input_matches_uint8() -> None:
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


def test_identity_error_by_frame_shows_when_the_identity_is_lost() -> None:
    a, other = make_clip(CFG, 0), make_clip(CFG, 6)
    half = len(a.frames) // 2
    # the reference's person for the first half, another one after: the late frames carry the error
    video = np.concatenate([a.frames[:half], other.frames[half:]])
    index, errors = M.identity_error_by_frame(video, a.frames[0], stride=4)
    assert index.tolist() == list(range(4, len(video), 4))
    assert errors.mean() == pytest.approx(M.identity_error_over_frames(video, a.frames[0], stride=4), rel=1e-5)
    early, late = errors[index < half], errors[index >= half]
    assert late.min() > early.max() + 0.05
    index, errors = M.identity_error_by_frame(video[:3], a.frames[0], stride=4)  # shorter than the stride
    assert index.tolist() == [2] and errors[0] == pytest.approx(M.identity_error(video[2:3], a.frames[0]))


def test_identity_components_add_up_and_the_face_part_ignores_hair_shirt_and_background() -> None:
    a = make_clip(CFG, 0)
    other = make_clip(CFG, 6)
    video = np.concatenate([a.frames[:1], other.frames[1:]])
    parts = M.identity_components_over_frames(video, a.frames[0], stride=4)
    assert set(parts) == set(M.IDENTITY_COMPONENTS)
    sizes = {k: sl.stop - sl.start for k, sl in M.IDENTITY_COMPONENTS.items()}
    total = sum(parts[k] * n for k, n in sizes.items()) / sum(sizes.values())
    assert total == pytest.approx(M.identity_error_over_frames(video, a.frames[0], stride=4), rel=1e-6)
    face = sum(parts[k] * sizes[k] for k in M.FACE_COMPONENTS) / sum(sizes[k] for k in M.FACE_COMPONENTS)
    assert M.face_identity_error_over_frames(video, a.frames[0], stride=4) == pytest.approx(face, rel=1e-6)
    # the same person on another shirt, hair and background: the whole error grows, the face part does not move
    frames = a.frames.copy()
    h = frames.shape[1]
    frames[:, -max(h // 25, 1):] = 255 - frames[:, -max(h // 25, 1):]  # the shirt rows
    frames[:, : h // 10, : h // 10] = 255 - frames[:, : h // 10, : h // 10]  # a background corner
    changed = M.identity_components_over_frames(frames, a.frames[0], stride=4)
    same = M.identity_components_over_frames(a.frames, a.frames[0], stride=4)
    assert changed["shirt"] > same["shirt"] + 0.1
    assert M.face_identity_error_over_frames(frames, a.frames[0], stride=4) == pytest.approx(
        M.face_identity_error_over_frames(a.frames, a.frames[0], stride=4), abs=1e-6)


def test_correlation_edge_cases() -> None:
    assert M.lipsync_correlation([0, 0, 0], [0, 1, 0]) == 0.0  # a still mouth follows none of the speech
    with pytest.raises(InputError, match="constant"):
        M.lipsync_correlation([0, 1, 0], [0.5, 0.5, 0.5])  # no speech: nothing to follow, undefined
    with pytest.raises(InputError, match="constant"):
        M.lipsync_correlation([1.0], [1.0])
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


def _batch(clips: list) -> torch.Tensor:
    return torch.from_numpy(np.stack([c.frames for c in clips])).permute(0, 4, 1, 2, 3)  # uint8 (B, 3, N, H, W)


def test_synthtalk_metric_matches_the_functions_and_reads_the_motion_request(tmp_path) -> None:
    """SynthTalkMetric: the mean of the per-clip functions, and motion_corr from the requested intensities."""
    from fantasytalking.io import write_video
    from fantasytalking.metrics import SynthTalkMetric, truth_of

    clips = [make_clip(CFG, i, motion=k) for i, k in enumerate((0.1, 0.5, 1.0))]
    metric = SynthTalkMetric(fps=CFG.fps)
    truths = [truth_of(c.truth, c.info) for c in clips]
    assert [t["requested_motion"] for t in truths] == [0.1, 0.5, 1.0]
    metric.update(_batch(clips), [t["truth_open"] for t in truths], silent=[t["silent"] for t in truths],
                  references=[c.identity for c in clips], requested_motion=[t["requested_motion"] for t in truths])
    got = {k: float(v) for k, v in metric.compute().items()}

    lips, closed, ident, heads = [], [], [], []
    for c, t in zip(clips, truths):
        opening = M.mouth_opening(c.frames)
        lips.append(M.lipsync_correlation(opening, t["truth_open"]))
        long_silent = M.long_silences(t["silent"], CFG.fps, 0.3)
        if long_silent.any():
            closed.append(M.mouth_closed_fraction(opening, long_silent))
        ident.append(M.identity_error_over_frames(c.frames, c.identity, 8))
        heads.append(M.head_motion(c.frames))
    assert got["lipsync"] == pytest.approx(np.mean(lips)) and got["lipsync"] > 0.9
    assert got["identity_error"] == pytest.approx(np.mean(ident)) and got["identity_error"] < 0.03
    assert got["head_motion"] == pytest.approx(np.mean(heads))
    assert np.isnan(got["closed_in_silence"]) if not closed else got["closed_in_silence"] == pytest.approx(np.mean(closed))
    assert got["motion_corr"] == pytest.approx(np.corrcoef([0.1, 0.5, 1.0], heads)[0, 1]) and got["motion_corr"] > 0.8

    # the same clips as files (their own fps), with the rendered portraits as references
    paths = []
    for i, c in enumerate(clips):
        paths.append(tmp_path / f"clip{i}.mp4")
        write_video(paths[-1], c.frames, CFG.fps, crf=10)
    from_files = SynthTalkMetric()  # no fps: the files carry theirs
    from_files.update(paths, [t["truth_open"] for t in truths], references=[c.frames[0] for c in clips])
    files = {k: float(v) for k, v in from_files.compute().items()}
    assert files["lipsync"] == pytest.approx(got["lipsync"], abs=0.03)
    assert np.isnan(files["motion_corr"])  # no requests given


def test_synthtalk_metric_errors() -> None:
    from fantasytalking.metrics import SynthTalkMetric, truth_of

    clip = make_clip(CFG, 0)
    with pytest.raises(InputError, match="fps="):
        SynthTalkMetric().update(_batch([clip]), [clip.column("open")])
    with pytest.raises(InputError, match="one per video"):
        SynthTalkMetric(fps=CFG.fps).update(_batch([clip, clip]), [clip.column("open")] * 3)
    with pytest.raises(InputError, match="truth array"):
        truth_of(clip.truth[:, :3])
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = {k: float(v) for k, v in SynthTalkMetric().compute().items()}
    assert all(np.isnan(v) for v in empty.values())


def test_synthtalk_metric_forward_reset_and_batched_inputs() -> None:
    """forward() gives the batch's value and accumulates; reset() clears; batched (B, N) truths and (B, 3, H, W)
    reference tensors split per video, and a lone (3, H, W) reference for a batch of 3 is refused, not split."""
    from fantasytalking.metrics import SynthTalkMetric

    clips = [make_clip(CFG, i, motion=k) for i, k in enumerate((0.1, 1.0, 0.5))]
    video = _batch(clips)
    truths = torch.from_numpy(np.stack([c.column("open") for c in clips]))  # (3, N)
    refs = torch.from_numpy(np.stack([c.frames[0] for c in clips])).permute(0, 3, 1, 2)  # uint8 (3, 3, H, W)
    metric = SynthTalkMetric(fps=CFG.fps)
    first = metric(video[:1], truths[:1], references=refs[:1], requested_motion=[0.1])
    assert np.isnan(float(first["motion_corr"]))  # one request: no correlation yet
    metric(video[1:], truths[1:], references=refs[1:], requested_motion=torch.tensor([1.0, 0.5]))
    total = {k: float(v) for k, v in metric.compute().items()}
    heads = [M.head_motion(c.frames) for c in clips]
    assert total["head_motion"] == pytest.approx(np.mean(heads))
    assert total["motion_corr"] == pytest.approx(np.corrcoef([0.1, 1.0, 0.5], heads)[0, 1])
    assert float(first["head_motion"]) == pytest.approx(heads[0])
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert np.isnan(float(metric.compute()["head_motion"]))
    with pytest.raises(InputError, match="one per video"):
        metric.update(video, truths, references=refs[0])
    with pytest.raises(InputError, match=r"one value per frame \(N,\)"):
        metric.update(video[:1], [clips[0].truth])  # the whole truth.npy, not its 'open' column
