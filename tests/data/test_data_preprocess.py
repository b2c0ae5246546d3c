"""Preprocess generated talking videos into shards, resume, and read them back through the data module."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from skimage.data import astronaut

from fantasytalking.data import TalkingClipDataModule, preprocess, preprocess_main
from fantasytalking.data import format as fmt
from fantasytalking.errors import InputError
from fantasytalking.face import DlibLandmarker
from fantasytalking.io import write_video

SR = 16_000
SIZE, FRAMES, FPS = 64, 17, 23.0
CLIP_SAMPLES = round(FRAMES * SR / FPS)  # 11826


def talking_clip(seconds: float = 3.0, fps: int = 25, size: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A speaking astronaut: a dark mouth opening with a syllable-rate envelope, the head swaying a few pixels,
    and a voiced, amplitude-modulated tone following the same envelope. Returns (frames (N, S, S, 3), audio (T,))."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(astronaut()[0:400, 56:456]).resize((size, size), Image.Resampling.BICUBIC))
    t = np.arange(int(seconds * SR)) / SR
    env = np.abs(np.sin(2 * np.pi * 2.0 * t)) ** 0.7  # about four syllables a second
    voice = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420, 560)))
    audio = (0.15 * env * voice + 0.005 * rng.standard_normal(t.size)).astype(np.float32)
    s = size / 400
    mx, my, mw = (223 - 56) * s, 150 * s, 40 * s  # the astronaut's mouth in the resized frame
    frames = []
    for i in range(int(seconds * fps)):
        img = Image.fromarray(base.copy())
        h = 2 + env[int(i / fps * SR)] * 10 * s
        ImageDraw.Draw(img).ellipse([mx - 0.35 * mw, my - h / 2, mx + 0.35 * mw, my + h / 2], fill=(60, 20, 30))
        dx, dy = round(4 * np.sin(i / 9)), round(3 * np.cos(i / 13))
        frames.append(np.roll(np.asarray(img), (dy, dx), axis=(0, 1)))
    return np.stack(frames), audio


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    frames, audio = talking_clip()
    out = {name: root / f"{name}.mp4" for name in ("talk", "noaudio", "noface", "silent", "short", "broken")}
    write_video(out["talk"], frames, 25, audio=audio, sample_rate=SR)
    (root / "talk.txt").write_text("An astronaut is talking.\n")  # the per-video prompt
    write_video(out["noaudio"], frames[:30], 25)
    noise = (np.random.default_rng(1).random((25, 160, 160, 3)) * 255).astype(np.uint8)
    write_video(out["noface"], noise, 25, audio=audio[:SR], sample_rate=SR)
    write_video(out["silent"], frames[:25], 25, audio=np.zeros(SR, np.float32), sample_rate=SR)
    write_video(out["short"], frames[:8], 25, audio=audio[:5000], sample_rate=SR)
    out["broken"].write_bytes(b"\x00\x01 this is not a video " * 50)
    return out


SETTINGS = dict(size=SIZE, num_frames=FRAMES, fps=FPS, face_size=112, landmarks="dlib", clips_per_shard=3)


@pytest.fixture(scope="module")
def landmarker() -> DlibLandmarker:
    return DlibLandmarker()


@pytest.fixture(scope="module")
def dataset(videos, landmarker, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("shards")
    report = preprocess(list(videos.values()), out, landmarker=landmarker, **SETTINGS)
    return out, report


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / fmt.MANIFEST).read_text().splitlines()]


def _rejections(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / fmt.REJECTIONS).read_text().splitlines()]


def test_shards_manifest_and_rejections(dataset, videos):
    out, report = dataset
    # 3 s at 23 fps holds four 17-frame clips; 3 clips per shard -> two shards
    assert report.clips_written == 4
    shards = sorted(p.name for p in out.glob("shard-*.tar"))
    assert shards == ["shard-000000.tar", "shard-000001.tar"]
    assert not list(out.glob(".*.tmp"))
    manifest = _manifest(out)
    assert [r["key"] for r in manifest] == [f"talk_{i:04d}" for i in range(4)]
    assert {r["shard"] for r in manifest} == set(shards)
    for r in manifest:
        assert r["source"] == str(videos["talk"]) and r["motion"]["face"] > 0 and r["motion"]["body"] > 0
        assert r["t0"] == pytest.approx(r["clip"] * FRAMES / FPS)
    reasons = {Path(r["source"]).stem: r["reason"] for r in _rejections(out)}
    assert reasons == {
        "noaudio": "no_audio", "noface": "no_face", "silent": "silent", "short": "too_short", "broken": "unreadable",
    }  # fmt: skip
    for r in _rejections(out):
        assert r["detail"] and "\n" not in r["detail"]


def test_sample_members_and_meta(dataset):
    out, _ = dataset
    with tarfile.open(out / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    key = "talk_0001"
    assert {f"{key}.{s}" for s in fmt.REQUIRED_MEMBERS} <= set(members)
    meta = json.loads(members[f"{key}.meta.json"])
    assert set(fmt.META_KEYS) <= set(meta)
    assert meta["num_frames"] == FRAMES and meta["size"] == SIZE and meta["fps"] == FPS
    assert meta["prompt"] == "An astronaut is talking." and meta["landmark_backend"] == "dlib-hog"
    audio = fmt.from_npy(members[f"{key}.audio.npy"])
    assert audio.dtype == np.float32 and audio.shape == (CLIP_SAMPLES,)
    assert meta["audio_start_sample"] == round(FRAMES / FPS * SR)
    video = fmt.decode_mp4(members[f"{key}.video.mp4"])
    assert video.shape == (FRAMES, SIZE, SIZE, 3)
    lm = fmt.from_npy(members[f"{key}.landmarks.npy"])
    assert lm.shape == (FRAMES, 68, 2) and lm.dtype == np.float32 and (lm > 0).all() and (lm < SIZE).all()
    packed = fmt.from_npy(members[f"{key}.lip_mask.npy"])
    assert packed.shape == (FRAMES, SIZE, SIZE // 8)
    mask = fmt.unpack_lip_mask(packed, meta["lip_mask_shape"])
    for j in range(FRAMES):  # the mask sits on the mouth landmarks of its own frame
        cx, cy = lm[j, 48:60].mean(0).astype(int)
        assert mask[j, cy, cx] == 1 and 0.005 < mask[j].mean() < 0.1
    assert fmt.decode_png(members[f"{key}.face.png"]).shape == (112, 112, 3)
    assert fmt.from_npy(members[f"{key}.face_embedding.npy"]).shape == (128,)


def test_stats_json(dataset):
    out, _ = dataset
    stats = json.loads((out / fmt.STATS).read_text())
    faces = [r["motion"]["face"] for r in _manifest(out)]
    assert stats["num_clips"] == 4 and stats["face"]["count"] == 4
    assert stats["clip_frames"] == [FRAMES]
    assert stats["face"]["min"] == pytest.approx(min(faces)) and stats["face"]["max"] == pytest.approx(max(faces))
    assert stats["face"]["p1"] <= stats["face"]["p99"] and stats["body"]["p1"] <= stats["body"]["p99"]


def test_rerun_adds_nothing(dataset, videos, landmarker):
    out, _ = dataset
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".tar", ".jsonl")}
    report = preprocess(list(videos.values()), out, landmarker=landmarker, **SETTINGS)
    assert report.clips_written == 0 and report.videos_skipped == len(videos)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".tar", ".jsonl")}
    assert after == before


def test_resume_after_a_crash_never_duplicates(dataset, videos, landmarker, tmp_path):
    src, _ = dataset
    out = tmp_path / "crashed"
    shutil.copytree(src, out)
    # the crash: the second shard was renamed but neither its manifest lines nor any progress got written,
    # and a half-written third shard was left behind
    lines = (out / fmt.MANIFEST).read_text().splitlines()
    (out / fmt.MANIFEST).write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # with a torn last line
    (out / fmt.PROGRESS).write_text("")
    (out / ".shard-000002.tar.tmp").write_bytes(b"partial")
    report = preprocess(list(videos.values()), out, landmarker=landmarker, **SETTINGS)
    assert report.clips_written == 0 and report.clips_already_present == 4
    assert not (out / ".shard-000002.tar.tmp").exists() and not (out / "shard-000002.tar").exists()
    keys = [r["key"] for r in _manifest(out)]
    assert sorted(keys) == [f"talk_{i:04d}" for i in range(4)]
    assert len(_rejections(out)) == 5  # not written twice
    # a new video appended to the run goes into a new shard, after the existing ones
    more = tmp_path / "more talk.mp4"
    shutil.copy(videos["talk"], more)
    report = preprocess([*videos.values(), more], out, landmarker=landmarker, max_clips_per_video=1,
                        **SETTINGS)  # fmt: skip
    assert report.clips_written == 1
    assert _manifest(out)[-1]["key"] == "more_talk_0000" and _manifest(out)[-1]["shard"] == "shard-000002.tar"


def test_settings_must_match_on_resume(dataset, videos, landmarker):
    out, _ = dataset
    with pytest.raises(InputError, match="was written with"):
        preprocess([videos["talk"]], out, landmarker=landmarker, **{**SETTINGS, "size": 128})


def test_cli(dataset, videos, capsys, tmp_path):
    out, _ = dataset
    with pytest.raises(SystemExit) as err:
        preprocess_main(["--help"])
    assert err.value.code == 0 and "--cache-latents" in capsys.readouterr().out
    assert preprocess_main([str(videos["talk"]), "--out", str(tmp_path / "x"), "--num-frames", "16"]) == 2
    assert "4k+1" in capsys.readouterr().err
    assert preprocess_main([str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "y")]) == 2
    # resuming the finished folder through the CLI: nothing to do
    args = [str(p) for p in videos.values()] + ["--out", str(out), "--size", str(SIZE), "--num-frames",
            str(FRAMES), "--face-size", "112", "--landmarks", "dlib", "--clips-per-shard", "3", "-q"]  # fmt: skip
    assert preprocess_main(args) == 0
    assert "0 clips written" in capsys.readouterr().out


def test_read_back_through_the_datamodule(dataset):
    out, _ = dataset
    dm = TalkingClipDataModule(out, batch_size=2, shuffle_buffer=4, seed=1, fps=FPS)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and dm.corrupt_samples == 0
    keys = sorted(k for b in batches for k in b["key"])
    assert keys == [f"talk_{i:04d}" for i in range(4)]
    b = batches[0]
    assert b["video"].shape == (2, 3, FRAMES, SIZE, SIZE) and b["video"].dtype == torch.float32
    assert b["video"].min() >= -1.0 and b["video"].max() <= 1.0 and b["video"].std() > 0.1
    assert b["audio"].shape == (2, CLIP_SAMPLES) and b["audio"].abs().max() > 0.01
    assert b["lip_mask"].shape == (2, 1, FRAMES, SIZE, SIZE)
    assert set(b["lip_mask"].unique().tolist()) == {0.0, 1.0}
    assert b["landmarks"].shape == (2, FRAMES, 68, 2)
    assert b["face"].shape == (2, 3, 112, 112) and b["face"].min() >= -1.0 and b["face"].max() <= 1.0
    assert b["face_embedding"].shape == (2, 128)
    motion = torch.cat([x["motion"] for x in batches])
    assert motion.shape == (4, 2) and (motion >= 0).all() and (motion <= 1).all()
    assert motion[:, 0].min() == 0.0 and motion[:, 0].max() == 1.0  # p1/p99 of 4 clips ~ their min and max
    assert b["prompt"] == ["An astronaut is talking."] * 2
    # validation split by shard, and shorter windows
    dm = TalkingClipDataModule(out, batch_size=1, val_fraction=0.5, num_frames=9)
    dm.setup("fit")
    assert len(dm.train_shards) == len(dm.val_shards) == 1
    val = list(dm.val_dataloader())
    assert val[0]["video"].shape == (1, 3, 9, SIZE, SIZE) and val[0]["audio"].shape == (1, round(9 * SR / FPS))


def test_truncated_shard_is_counted_not_fatal(dataset, tmp_path, caplog):
    out, _ = dataset
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(out / fmt.STATS, broken / fmt.STATS)
    shutil.copy(out / "shard-000001.tar", broken / "shard-000001.tar")
    whole = (out / "shard-000000.tar").read_bytes()
    (broken / "shard-000000.tar").write_bytes(whole[: int(len(whole) * 0.6)])  # cut inside the 2nd/3rd clip
    dm = TalkingClipDataModule(broken, batch_size=1, shuffle_buffer=1)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="fantasytalking.data"):
        keys = [b["key"][0] for b in dm.train_dataloader()]
    assert dm.corrupt_samples > 0
    assert "talk_0003" in keys and "talk_0000" in keys  # the whole shard and the readable part still arrive
    assert any("shard-000000.tar" in r.getMessage() for r in caplog.records)


def test_frames_are_resampled_to_the_target_rate(tmp_path):
    from fantasytalking.data.preprocess import _VideoStream

    grey = np.stack([np.full((32, 32, 3), 10 * i, np.uint8) for i in range(20)])  # 2 s at 10 fps
    path = tmp_path / "ramp.mp4"
    write_video(path, grey, 10)
    stream = _VideoStream(path, 23.0, None)
    frames = list(stream.frames())
    stream.close()
    assert len(frames) == 46  # 2 s at 23 fps
    levels = [round(float(f.mean()) / 10) for f in frames]
    assert levels == [int(k * 10 / 23 + 1e-9) for k in range(46)]  # the frame on screen at k / 23 s


def test_overlapping_clips(videos, landmarker, tmp_path):
    out = tmp_path / "overlap"
    report = preprocess([videos["talk"]], out, landmarker=landmarker, stride=6, max_clips_per_video=3,
                        **SETTINGS)  # fmt: skip
    assert report.clips_written == 3
    assert [r["t0"] for r in _manifest(out)] == pytest.approx([0.0, 6 / FPS, 12 / FPS])
    # clip c starts 6c frames (at 23 fps) into the video: re-cut the decoded source with the clip's recorded crop
    # box at every start and the clip's own start must fit best (the stored clips carry H.264 noise of their own,
    # so two stored clips are not compared with each other)
    from fantasytalking.face.track import CropBox, crop_frames
    from fantasytalking.io.video import read_video

    source, source_fps, _, _ = read_video(videos["talk"])
    on_screen = [int(k * source_fps / FPS + 1e-6) for k in range(int(len(source) * FPS / source_fps))]
    with tarfile.open(out / "shard-000000.tar") as tar:
        for c in range(3):
            clip = fmt.decode_mp4(tar.extractfile(f"talk_000{c}.video.mp4").read()).astype(np.int16)
            x0, y0, x1, _ = json.loads(tar.extractfile(f"talk_000{c}.meta.json").read())["crop_box"]
            box = CropBox(x0, y0, x1 - x0)
            errors = [np.abs(crop_frames(source[on_screen[s : s + FRAMES]], box, SIZE).astype(np.int16) - clip).mean()
                      for s in range(0, 19)]  # fmt: skip
            assert int(np.argmin(errors)) == 6 * c, np.round(errors, 2)


class _StillPose:
    """A pose source that sees no body motion (stands in for a real pose model such as DWPose)."""

    name = "still-pose"

    def joints(self, frames: np.ndarray, landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[10.0, 20.0], [30.0, 40.0]], np.float32), (len(frames), 1, 1))  # (N, 2, 2)


class _FailingLandmarker(DlibLandmarker):
    """Fails on the first clip it sees, as a broken model would."""

    calls = 0

    def landmarks(self, image, box):
        type(self).calls += 1
        if type(self).calls == 1:
            raise RuntimeError("model exploded")
        return super().landmarks(image, box)


def test_pluggable_pose_source_and_an_unexpected_error(videos, tmp_path):
    out = tmp_path / "plug"
    report = preprocess([videos["talk"], videos["noface"]], out, landmarker=_FailingLandmarker(),
                        pose_source=_StillPose(), max_clips_per_video=2, **SETTINGS)  # fmt: skip
    rejected = _rejections(out)
    assert [(Path(r["source"]).stem, r["reason"]) for r in rejected] == [("talk", "error"), ("noface", "no_face")]
    assert "model exploded" in rejected[0]["detail"]
    assert report.clips_written == 0  # the first video stopped at the error; the run went on to the next
    report = preprocess([videos["talk"]], tmp_path / "plug2", landmarker=DlibLandmarker(), pose_source=_StillPose(),
                        max_clips_per_video=1, **SETTINGS)  # fmt: skip
    (record,) = _manifest(tmp_path / "plug2")
    assert record["motion"]["body"] == pytest.approx(0.0, abs=1e-20) and record["motion"]["face"] > 0
    with tarfile.open(tmp_path / "plug2" / "shard-000000.tar") as tar:
        assert json.loads(tar.extractfile("talk_0000.meta.json").read())["pose_source"] == "still-pose"
