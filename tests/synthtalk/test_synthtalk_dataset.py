"""SynthTalk clips and shards: determinism, held-out split, silence, preprocess-format shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fantasytalking.data.synthtalk import (
    SENTENCES,
    VOICES,
    SynthConfig,
    espeak_available,
    identity_for,
    make_clip,
    read_truth,
    sentences_for,
    synth_main,
    write_synthtalk,
)
from fantasytalking.data.synthtalk.dataset import TRUTH_COLUMNS

pytestmark = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng1 is not installed")

CFG = SynthConfig(size=64, num_frames=17, seed=3)


def test_clip_shapes_and_determinism() -> None:
    a, b = make_clip(CFG, 2), make_clip(CFG, 2)
    assert a.frames.shape == (17, 64, 64, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (round(17 * 16000 / 23),) and a.audio.dtype == np.float32
    assert a.landmarks.shape == (17, 68, 2) and a.truth.shape == (17, len(TRUTH_COLUMNS))
    for x, y in ((a.frames, b.frames), (a.audio, b.audio), (a.landmarks, b.landmarks), (a.truth, b.truth)):
        assert np.array_equal(x, y)
    assert a.info == b.info
    c = make_clip(SynthConfig(size=64, num_frames=17, seed=4), 2)
    assert not np.array_equal(a.frames, c.frames)
    # landmarks lie on the face: the mouth corners bracket the mouth, inside the frame
    assert np.all((a.landmarks >= 0) & (a.landmarks < 64))


def test_heldout_is_disjoint_from_train() -> None:
    for lang in SENTENCES:
        train = {s for _, s in sentences_for("train", lang)}
        held = {s for _, s in sentences_for("heldout", lang)}
        assert train and held and not train & held
        assert not set(VOICES["train"][lang]) & set(VOICES["heldout"][lang])
    train_ids = {identity_for("train", s, k)[1] for s in range(3) for k in range(20)}
    held_ids = {identity_for("heldout", s, k)[1] for s in range(3) for k in range(20)}
    assert not train_ids & held_ids
    held_cfg = SynthConfig(size=64, num_frames=17, seed=3, split="heldout")
    clip = make_clip(held_cfg, 0)
    assert clip.info["voice"] in VOICES["heldout"][clip.info["language"]]
    assert clip.info["sentence"] in {s for _, s in sentences_for("heldout", clip.info["language"])}


def test_pause_share_ends_windows_over_the_final_pause() -> None:
    """--pause-share: the chosen share of windows ends over the utterance's final pause (mouth closed for longer
    than 0.3 s at the end); the other clips are exactly those of the default, and bad shares are refused."""
    from fantasytalking.errors import InputError
    from fantasytalking.metrics.synthtalk import long_silences

    paused = SynthConfig(size=64, num_frames=17, seed=3, pause_share=1.0)
    for index in range(3):
        clip = make_clip(paused, index)
        silent = clip.column("speaking") <= 0
        assert clip.info["pause_window"] and long_silences(silent, 23.0, 0.3)[-1]  # the clip ends in a long pause
        assert np.all(clip.column("open")[-3:] < 0.05)
    half = SynthConfig(size=64, num_frames=17, seed=3, pause_share=0.5)
    flags = [make_clip(half, i).info["pause_window"] for i in range(8)]
    assert any(flags) and not all(flags)
    keep = flags.index(False)
    assert np.array_equal(make_clip(half, keep).frames, make_clip(CFG, keep).frames)
    with pytest.raises(InputError, match="pause-share"):
        SynthConfig(pause_share=1.5).validate()


def test_silent_clip_has_a_closed_mouth() -> None:
    clip = make_clip(CFG, 0, silent=True)
    assert np.all(clip.column("open") == 0) and np.all(clip.column("gap") == 0)
    assert np.all(clip.audio == 0)


def test_shards_are_read_by_the_datamodule(tmp_path: Path) -> None:
    from fantasytalking.data import TalkingClipDataModule

    out = tmp_path / "synth"
    report = write_synthtalk(SynthConfig(out_dir=out, clips=3, size=64, num_frames=17, seed=1, clips_per_shard=2,
                                         face_encoder="identity"))  # fmt: skip
    assert report.clips == 3 and report.shards == 2
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_clips"] == 3
    dm = TalkingClipDataModule(out, batch_size=3, shuffle_buffer=1, drop_last=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (3, 3, 17, 64, 64)
    assert batch["audio"].shape == (3, round(17 * 16000 / 23))
    assert batch["lip_mask"].shape == (3, 1, 17, 64, 64) and batch["lip_mask"].sum() > 0
    assert batch["landmarks"].shape == (3, 17, 68, 2)
    assert batch["face"].shape == (3, 3, 224, 224)
    assert batch["face_embedding"].ndim == 2 and batch["motion"].shape == (3, 2)
    assert dm.corrupt_samples == 0
    truth = read_truth(out)
    assert set(truth) == set(batch["key"])
    arr, info = truth[batch["key"][0]]
    assert arr.shape == (17, len(TRUTH_COLUMNS)) and "identity" in info and "phonemes" in info


def test_cli_writes_and_refuses_a_used_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--clips", "1", "--size", "64", "--frames", "17", "--seed", "0", "--quiet"]
    assert synth_main(argv) == 0
    assert "wrote 1 SynthTalk clips" in capsys.readouterr().out
    assert synth_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert synth_main(["--out", str(tmp_path / "x"), "--frames", "16"]) == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_same_seed_writes_the_same_samples(tmp_path: Path, workers: int) -> None:
    """The same seed writes the same samples, in the same shards and order, whatever the number of workers."""
    import tarfile

    from fantasytalking.data import format as fmt

    def members(out: Path, workers: int) -> tuple[dict[str, bytes], list[str], str]:
        write_synthtalk(SynthConfig(out_dir=out, clips=3, size=64, num_frames=17, seed=8, face_encoder="identity",
                                    clips_per_shard=2, workers=workers))  # fmt: skip
        found: dict[str, bytes] = {}
        order: list[str] = []
        for shard in sorted(out.glob("shard-*.tar")):
            with tarfile.open(shard) as tar:
                for m in tar:
                    found[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
                    order.append(f"{shard.name}/{m.name}")
        manifest = (out / fmt.MANIFEST).read_text()
        settings = {k: v for k, v in json.loads((out / "synthtalk.json").read_text()).items() if k != "out_dir"}
        return found, order, manifest + json.dumps(settings)

    (a, order_a, rest_a), (b, order_b, rest_b) = members(tmp_path / "a", 1), members(tmp_path / "b", workers)
    assert order_a == order_b and rest_a == rest_b  # same shards, same order, same manifest and settings
    assert len(order_a) == 3 * 10
    for name in a:  # byte for byte, the mp4s too (x264's AVX-512 macroblock tree read uninitialised memory)
        assert a[name] == b[name], name


def test_workers_must_be_positive(tmp_path: Path) -> None:
    assert synth_main(["--out", str(tmp_path / "w"), "--clips", "1", "--workers", "0", "--quiet"]) == 2
    assert not (tmp_path / "w").exists()


def test_dlib_embedding_is_of_the_frame_inference_embeds(tmp_path: Path) -> None:
    """The shard's face_embedding is the dlib descriptor of frame 0 at the clip's size (what preprocessing writes
    and the pipeline computes from the reference image), not of the larger render face.png is cut from."""
    import io
    import tarfile

    from fantasytalking.data import format as fmt
    from fantasytalking.face.embed import DlibFaceEncoder
    from fantasytalking.io.video import read_video

    out = tmp_path / "dlib"
    write_synthtalk(SynthConfig(out_dir=out, clips=1, size=96, num_frames=17, seed=5, face_encoder="dlib"))
    with tarfile.open(out / "shard-000000.tar") as tar:
        data = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    stored = np.load(io.BytesIO(data[fmt.FACE_EMBEDDING]))
    landmarks = np.load(io.BytesIO(data[fmt.LANDMARKS]))  # (N, 68, 2)
    video = tmp_path / "clip.mp4"
    video.write_bytes(data[fmt.VIDEO])
    first = read_video(video)[0][0]  # (S, S, 3) as the shard shows it
    encoder = DlibFaceEncoder()
    of_frame = np.asarray(encoder.encode(first, landmarks[0]))  # what the pipeline computes from the portrait
    # H.264 moves the descriptor a little; the large render moved it by ~0.25, half of what separates two people
    print("DIST", np.linalg.norm(stored - of_frame))
    assert np.linalg.norm(stored - of_frame) < 0.15


def test_any_face_encoder_spec_writes_its_embedding(tmp_path: Path) -> None:
    """--face-encoder takes the specs training and inference use (here dlib beside a 2x2 head thumbnail)."""
    import json
    import tarfile

    from fantasytalking.data import format as fmt
    from fantasytalking.face import make_face_encoder

    out = tmp_path / "head"
    write_synthtalk(SynthConfig(out_dir=out, clips=1, size=64, num_frames=5, seed=5, face_encoder="dlib+head:2"))
    with tarfile.open(out / "shard-000000.tar") as tar:
        data = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    stored = fmt.from_npy(data[fmt.FACE_EMBEDDING])
    meta = json.loads(data[fmt.META])
    assert stored.shape == (128 + 12,) and meta["embedding_dim"] == 140
    assert meta["face_encoder"] == "dlib-resnet-v1+head-thumbnail-2x2"
    first = fmt.decode_mp4(data[fmt.VIDEO])[0]
    landmarks = fmt.from_npy(data[fmt.LANDMARKS])[0]
    thumb = make_face_encoder("head:2").encode(first, landmarks)  # of the frame as the shard shows it
    assert np.abs(stored[128:] - thumb).max() < 0.03  # H.264 moves the cell means by a few levels at most


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", "-1"), ("--face-size", "0"), ("--crf", "99"), ("--clips-per-shard", "0"), ("--face-encoder", "clip"),
     ("--face-encoder", "dlib+head:0")],
)
def test_bad_options_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """A bad option is a one-line error naming it, and no folder or settings file is left behind (a negative seed
    used to crash in numpy, --face-size/--crf were refused only after synthtalk.json was written, and
    --clips-per-shard 0 silently wrote one clip per shard)."""
    out = tmp_path / "new" / "synth"
    argv = ["--out", str(out), "--clips", "1", "--size", "32", "--frames", "5", "--face-encoder", "identity",
            "--quiet", option, value]  # fmt: skip
    assert synth_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and option in err and "\n" not in err
    assert not (tmp_path / "new").exists()


def test_out_must_be_a_folder_without_dataset_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a file, or a folder holding any dataset file (not only shards or a manifest), is refused with
    one line, and the folder's files are left as they were."""
    common = ["--clips", "1", "--size", "32", "--frames", "5", "--face-encoder", "identity", "--quiet"]
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert synth_main(["--out", str(a_file), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and a_file.read_text() == "keep"
    for name in ("stats.json", "synthtalk.json", "preprocess.json"):
        used = tmp_path / name.split(".")[0]
        used.mkdir()
        (used / name).write_text('{"mine": 1}')
        assert synth_main(["--out", str(used), *common]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "already holds a dataset" in err and "\n" not in err
        assert sorted(p.name for p in used.iterdir()) == [name] and (used / name).read_text() == '{"mine": 1}'


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_failed_run_leaves_no_partial_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    """Interrupted (or failing) after two finished shards: the run removes what it wrote (shards, manifest,
    settings, the folders it made), so no half dataset is left for the datamodule to read as a whole one; a folder
    that existed before keeps its own files."""
    from fantasytalking.data.synthtalk import dataset as ds

    real = ds.make_clip

    def fail_at_two(cfg: SynthConfig, index: int, **kw: object) -> object:
        if index == 2:
            raise failure()
        return real(cfg, index, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ds, "make_clip", fail_at_two)
    made = tmp_path / "made" / "synth"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for out in (made, kept):
        cfg = SynthConfig(out_dir=out, clips=3, size=32, num_frames=5, seed=0, clips_per_shard=1,
                          face_encoder="identity")  # fmt: skip
        with pytest.raises(failure):
            write_synthtalk(cfg)
    assert not (tmp_path / "made").exists()
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    if failure is KeyboardInterrupt:  # the CLI says so in one line and exits 130
        argv = ["--out", str(made), "--clips", "3", "--size", "32", "--frames", "5", "--clips-per-shard", "1",
                "--face-encoder", "identity", "--quiet"]  # fmt: skip
        assert synth_main(argv) == 130
        assert not (tmp_path / "made").exists()


def test_distinct_identities_give_each_clip_its_own_face_and_keep_the_other_draws(tmp_path: Path) -> None:
    """--distinct-identities: clip i takes pool identity i mod pool, so a pool as large as the clip count gives one
    identity per clip (a draw with replacement repeats some); sentence, voice, motion and window are unchanged."""
    drawn = SynthConfig(size=64, num_frames=17, seed=3, split="heldout", clips=8, identities=8)
    distinct = SynthConfig(size=64, num_frames=17, seed=3, split="heldout", clips=8, identities=8,
                           distinct_identities=True)  # fmt: skip
    a = [make_clip(drawn, i).info for i in range(8)]
    b = [make_clip(distinct, i).info for i in range(8)]
    assert len({x["identity_id"] for x in b}) == 8 > len({x["identity_id"] for x in a})
    assert [x["identity_id"] for x in b] == [identity_for("heldout", 3, k)[0] for k in range(8)]
    for x, y in zip(a, b):
        for key in ("sentence", "voice", "language", "rate", "motion_intensity"):
            assert x[key] == y[key], key
    # a pool smaller than the clips cycles through it
    small = SynthConfig(size=64, num_frames=17, seed=3, clips=6, identities=3, distinct_identities=True)
    assert [make_clip(small, i).info["identity_id"] for i in range(6)] == [
        identity_for("train", 3, k % 3)[0] for k in range(6)
    ]
    # the CLI flag reaches the settings written beside the shards
    assert synth_main(["--out", str(tmp_path / "d"), "--clips", "2", "--size", "64", "--frames", "17",
                       "--identities", "2", "--distinct-identities", "--face-encoder", "identity", "--quiet"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "d" / "synthtalk.json").read_text())["distinct_identities"] is True
