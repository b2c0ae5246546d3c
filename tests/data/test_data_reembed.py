"""``fantasytalking reembed``: a shard folder copied with every face embedding made by another face encoder."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fantasytalking.cli import main as cli_main
from fantasytalking.data import TalkingClipDataModule
from fantasytalking.data import format as fmt
from fantasytalking.data.reembed import REEMBED_RECORD, reembed_faces
from fantasytalking.data.synthtalk import SynthConfig, write_synthtalk
from fantasytalking.errors import InputError
from fantasytalking.face import HeadThumbnailEncoder


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reembed") / "synth"
    write_synthtalk(SynthConfig(out_dir=out, clips=3, size=64, num_frames=17, seed=3, clips_per_shard=2,
                                face_encoder="identity"))  # fmt: skip
    return out


def _members(shard: Path) -> list[tuple[str, int, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, m.mtime, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def test_reembed_rewrites_only_the_face_embedding(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "head"
    record = reembed_faces(synth_dir, out, "head:4")
    assert record["clips"] == 3 and record["embedding_dim"] == 48 and record["encoder_name"] == "head-thumbnail-4x4"
    assert json.loads((out / REEMBED_RECORD).read_text())["source"] == str(synth_dir)
    assert json.loads((out / "synthtalk.json").read_text())["face_encoder"] == "head:4"
    for name in (fmt.MANIFEST, fmt.STATS):
        assert (out / name).read_bytes() == (synth_dir / name).read_bytes()
    encoder = HeadThumbnailEncoder(grid=4)
    shards = sorted(synth_dir.glob(fmt.SHARD_GLOB))
    assert [p.name for p in shards] == [p.name for p in sorted(out.glob(fmt.SHARD_GLOB))]
    for shard in shards:
        before, after = _members(shard), _members(out / shard.name)
        assert [(n, t) for n, t, _ in before] == [(n, t) for n, t, _ in after]  # same members, order and times
        by_name = {n: d for n, _, d in after}
        for (name, _, old), (_, _, new) in zip(before, after, strict=True):
            key, _, suffix = name.partition(".")
            if suffix == fmt.FACE_EMBEDDING:
                frame0 = fmt.decode_mp4(by_name[f"{key}.{fmt.VIDEO}"])[0]
                landmarks0 = fmt.from_npy(by_name[f"{key}.{fmt.LANDMARKS}"])[0]
                assert np.array_equal(fmt.from_npy(new), encoder.encode(frame0, landmarks0))
                assert fmt.from_npy(old).shape != (48,)
            elif suffix == fmt.META:
                meta = json.loads(new)
                assert meta["face_encoder"] == "head-thumbnail-4x4" and meta["embedding_dim"] == 48
                assert {k: v for k, v in meta.items() if k not in ("face_encoder", "embedding_dim")} == {
                    k: v for k, v in json.loads(old).items() if k not in ("face_encoder", "embedding_dim")}
            else:
                assert new == old
    dm = TalkingClipDataModule(out, batch_size=3, shuffle_buffer=1, drop_last=False)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["face_embedding"].shape == (3, 48)
    assert dm.face_embedding_stats()[0].shape == (48,)


def test_reembed_refuses_bad_input_and_writes_nothing(synth_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(InputError, match="exists"):
        reembed_faces(synth_dir, taken, "head")
    with pytest.raises(InputError, match="no shard"):
        reembed_faces(tmp_path / "nowhere", tmp_path / "x", "head")
    with pytest.raises(InputError, match="unknown face encoder"):
        reembed_faces(synth_dir, tmp_path / "x", "clip")
    # a sample without its landmarks stops the run, naming it; nothing is left behind
    broken = tmp_path / "broken"
    broken.mkdir()
    for side in synth_dir.iterdir():
        if side.name.endswith(".tar"):
            with tarfile.open(side) as src, tarfile.open(broken / side.name, "w") as dst:
                for m in src:
                    if not m.name.endswith(fmt.LANDMARKS) or "0001" not in m.name:
                        dst.addfile(m, src.extractfile(m))
        else:
            (broken / side.name).write_bytes(side.read_bytes())
    with pytest.raises(InputError, match=r"0001 has no landmarks\.npy"):
        reembed_faces(broken, tmp_path / "out", "head")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "taken"]
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    first = sorted(synth_dir.glob(fmt.SHARD_GLOB))[0].read_bytes()
    (truncated / "shard-000000.tar").write_bytes(first[: len(first) // 2])
    with pytest.raises(InputError, match="corrupt"):
        reembed_faces(truncated, tmp_path / "out", "head")
    assert not (tmp_path / "out").exists()
    assert cli_main(["reembed", str(broken), "--out", str(tmp_path / "out"), "--face-encoder", "head"]) == 2
    assert "has no landmarks.npy" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert cli_main(["reembed", str(synth_dir), "--out", str(tmp_path / "ok"), "--face-encoder", "head:2"]) == 0
    assert "3 clips" in capsys.readouterr().out and (tmp_path / "ok" / REEMBED_RECORD).is_file()
