"""``fantasytalking evaluate`` end to end on two tiny portrait videos, with the metrics that need no download."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from fantasytalking.io import write_video
from fantasytalking.metrics.evaluate import evaluate_main


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    (root / "videos").mkdir(), (root / "refs").mkdir(), (root / "audio").mkdir()
    img = astronaut()[40:296, 96:352]
    t = np.arange(16000 * 8 // 25) / 16000
    for i, stem in enumerate(("a", "b")):
        frames = np.stack([np.roll(img, s * (i + 1), axis=1) for s in range(8)])
        speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        write_video(root / "videos" / f"{stem}.mp4", frames, 25, audio=speech, sample_rate=16000)
        Image.fromarray(img).save(root / "refs" / f"{stem}.png")
    return root


def test_default_metrics_write_json_and_markdown(folders, tmp_path) -> None:
    out = tmp_path / "results.json"
    rc = evaluate_main(["--videos", str(folders / "videos"), "--references", str(folders / "refs"), "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_videos"] == 2 and res["settings"]["metrics"] == ["identity", "dynamics", "lipsync"]
    assert res["metrics"]["identity"] > 0.9
    assert set(res["per_video"]) == {"a", "b"} and "landmark_speed" in res["per_video"]["a"]
    md = out.with_suffix(".md").read_text()
    assert "| identity (higher better) |" in md and "| a |" in md


def test_missing_weights_stop_before_work(folders, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    out = tmp_path / "r.json"
    argv = ["--videos", str(folders / "videos"), "--references", str(folders / "refs"), "--out", str(out)]
    assert evaluate_main([*argv, "--metrics", "fid,dynamics"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pt_inception-2015-12-05-6726825d.pth" in err and "--inception" in err
    assert not out.exists()
    assert evaluate_main([*argv, "--metrics", "fvd", "--i3d", str(tmp_path / "x.pt")]) == 2
    assert "reference videos" in capsys.readouterr().err  # references are images: FVD cannot run


def test_unmatched_stems_and_unknown_metric(folders, tmp_path, capsys) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.fromarray(astronaut()).save(refs / "a.png")
    argv = ["--videos", str(folders / "videos"), "--references", str(refs), "--out", str(tmp_path / "r.json")]
    assert evaluate_main(argv) == 2
    assert "b" in capsys.readouterr().err
    assert evaluate_main([*argv, "--metrics", "bogus"]) == 2
    assert "unknown metric" in capsys.readouterr().err


@pytest.fixture(scope="module")
def other_system(tmp_path_factory):
    """Another system's output: silent mp4s at 30 fps and 160 px, speech as separate wavs, ground-truth videos."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("other")
    for sub in ("videos", "audio", "gt"):
        (root / sub).mkdir()
    img = np.asarray(Image.fromarray(astronaut()[40:296, 96:352]).resize((160, 160)))
    t = np.arange(16000 * 10 // 30) / 16000
    for i, stem in enumerate(("x", "y")):
        frames = np.stack([np.roll(img, s * (i + 1), axis=1) for s in range(10)])
        write_video(root / "videos" / f"{stem}.mp4", frames, 30)  # no audio track
        write_video(root / "gt" / f"{stem}.mp4", frames[::-1], 30)
        sf.write(root / "audio" / f"{stem}.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return root


def test_cli_evaluates_another_systems_folder(other_system, tmp_path, capsys) -> None:
    """`fantasytalking evaluate` (the CLI command) on silent 30 fps videos with --audio and reference videos."""
    from fantasytalking.cli import main

    out = tmp_path / "other.json"
    rc = main(["evaluate", "--videos", str(other_system / "videos"), "--references", str(other_system / "gt"),
               "--audio", str(other_system / "audio"), "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["settings"]["metrics"] == ["identity", "dynamics", "lipsync"] and res["num_videos"] == 2
    assert set(res["per_video"]) == {"x", "y"}
    assert all(np.isfinite(res["per_video"][s][k]) for s in "xy" for k in ("identity", "lipsync_corr"))
    assert res["metrics"]["identity"] > 0.9  # the same face, reference = first frame of the ground-truth video
    assert "| x |" in out.with_suffix(".md").read_text()


def test_audio_and_face_encoder_errors_stop_before_work(other_system, tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    argv = ["--videos", str(other_system / "videos"), "--out", str(out)]
    # silent videos, lip sync asked (it is a default metric), no --audio: one line naming --audio
    assert evaluate_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no audio track" in err and "--audio" in err and "x.mp4" in err
    # an audio folder that lacks a stem
    partial = tmp_path / "audio"
    partial.mkdir()
    (partial / "x.wav").write_bytes((other_system / "audio" / "x.wav").read_bytes())
    assert evaluate_main([*argv, "--audio", str(partial)]) == 2
    err = capsys.readouterr().err
    assert "no audio file with the same stem for 1 video(s) (y)" in err and "--audio" in err
    # a missing ArcFace file fails in the checks, before the other metrics run
    assert evaluate_main([*argv, "--metrics", "dynamics,identity", "--references", str(other_system / "gt"),
                          "--face-encoder", f"arcface:{tmp_path / 'missing.pt'}"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "missing.pt" in err and "dynamics:" not in err
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_synthtalk_ground_truth_measures(tmp_path, capsys) -> None:
    """--synthtalk SHARDS: videos named by sample key are scored against their clips' truth (here: the clips
    themselves, so lip sync is near 1 and the identity error small); a video at another fps is refused."""
    from fantasytalking.data.synthtalk import SynthConfig, espeak_available, make_clip, read_truth, write_synthtalk

    if not espeak_available():
        pytest.skip("libespeak-ng1 is not installed")
    cfg = SynthConfig(out_dir=tmp_path / "shards", clips=2, size=64, num_frames=33, seed=4, face_encoder="identity")
    write_synthtalk(cfg)
    videos = tmp_path / "videos"
    videos.mkdir()
    for key, (_, info) in read_truth(cfg.out_dir).items():
        write_video(videos / f"{key}.mp4", make_clip(cfg, int(info["index"])).frames, cfg.fps, crf=10)
    out = tmp_path / "st.json"
    argv = ["--videos", str(videos), "--synthtalk", str(cfg.out_dir), "--out", str(out)]
    assert evaluate_main([*argv, "--metrics", "synthtalk"]) == 0, capsys.readouterr().err
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert res["settings"]["metrics"] == ["synthtalk"]
    assert "synthtalk_motion_corr" in res["metrics"]  # two clips, two requests
    assert not any("motion_corr" in row for row in res["per_video"].values())  # one request: NaN, left out
    assert res["metrics"]["synthtalk_lipsync"] > 0.9 and res["metrics"]["synthtalk_identity_error"] < 0.03
    assert res["direction"]["synthtalk_identity_error"] == "lower"
    assert all("synthtalk_head_motion" in row for row in res["per_video"].values())
    assert evaluate_main([*argv, "--metrics", "dynamics", "--overwrite"]) == 2  # --synthtalk would be ignored
    assert "leaves out synthtalk" in capsys.readouterr().err
    # a stem that is no sample key, then a video at another frame rate
    stray = videos / "stray.mp4"
    write_video(stray, make_clip(cfg, 0).frames, cfg.fps)
    assert evaluate_main([*argv, "--metrics", "synthtalk", "--overwrite"]) == 2
    assert "no SynthTalk clip with the same stem for 1 video(s) (stray)" in capsys.readouterr().err
    stray.unlink()
    first = sorted(videos.iterdir())[0]
    write_video(first, make_clip(cfg, 0).frames, 25, overwrite=True)
    assert evaluate_main([*argv, "--metrics", "synthtalk", "--overwrite"]) == 2
    assert "runs at 25 fps but the SynthTalk truth at 23 fps" in capsys.readouterr().err
