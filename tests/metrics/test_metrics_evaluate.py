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
