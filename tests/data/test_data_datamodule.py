"""TalkingClipDataModule on small shards written directly in the shard format (no face models needed)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from fantasytalking.data import TalkingClipDataModule, collate_clips, list_shards, split_shards
from fantasytalking.data import format as fmt
from fantasytalking.errors import InputError
from fantasytalking.io import write_video

N, S, FPS, SR = 9, 32, 23.0, 16_000
T = round(N * SR / FPS)


def _mp4(tmp: Path, frames: np.ndarray) -> bytes:
    path = tmp / "clip.mp4"
    write_video(path, frames, FPS, overwrite=True)
    return path.read_bytes()


def _sample(key: str, index: int, tmp: Path, *, video: bytes | None = None) -> dict[str, bytes]:
    """One clip whose content encodes its frame numbers: frame j is grey level 20 * j, landmarks are all j,
    audio sample i is i (so a window's start can be read back from any field)."""
    frames = np.stack([np.full((S, S, 3), 20 * j, np.uint8) for j in range(N)])
    lm = np.repeat(np.arange(N, dtype=np.float32)[:, None, None], 68, 1).repeat(2, 2)  # (N, 68, 2)
    mask = np.zeros((N, S, S), np.uint8)
    mask[:, 10:20, 8:24] = 1
    meta = {k: None for k in fmt.META_KEYS} | {
        "format_version": fmt.FORMAT_VERSION, "key": key, "clip": index, "t0": 0.0, "fps": FPS, "num_frames": N,
        "size": S, "lip_mask_shape": [N, S, S], "prompt": f"prompt {key}", "audio_samples": T,
    }  # fmt: skip
    return {
        fmt.VIDEO: video if video is not None else _mp4(tmp, frames),
        fmt.AUDIO: fmt.to_npy(np.arange(T + 50, dtype=np.float32)[:T]),
        fmt.LANDMARKS: fmt.to_npy(lm),
        fmt.LIP_MASK: fmt.to_npy(fmt.pack_lip_mask(mask)),
        fmt.FACE: fmt.encode_png(np.full((16, 16, 3), 255, np.uint8)),
        fmt.FACE_EMBEDDING: fmt.to_npy(np.full(128, index, np.float32)),
        fmt.MOTION: json.dumps({"face": 0.1 * index, "body": 0.05 * index}).encode(),
        fmt.META: json.dumps(meta).encode(),
    }


def _write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """6 shards x 2 clips, keys clip_00 .. clip_11, and stats with p1 = 0, p99 = 1 (face) / 0.5 (body)."""
    root = tmp_path_factory.mktemp("ds")
    tmp = tmp_path_factory.mktemp("work")
    for s in range(6):
        samples = {f"clip_{2 * s + i:02d}": _sample(f"clip_{2 * s + i:02d}", 2 * s + i, tmp) for i in range(2)}
        _write_shard(root / fmt.shard_name(s), samples)
    stats = {"face": {"p1": 0.0, "p99": 1.0}, "body": {"p1": 0.0, "p99": 0.5}}
    (root / fmt.STATS).write_text(json.dumps(stats))
    return root


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_batch_layout_and_ranges(shard_dir):
    dm = TalkingClipDataModule(shard_dir, batch_size=4, shuffle_buffer=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, N, S, S) and batch["audio"].shape == (4, T)
    assert batch["lip_mask"].shape == (4, 1, N, S, S) and batch["landmarks"].shape == (4, N, 68, 2)
    assert batch["face"].shape == (4, 3, 16, 16) and batch["face_embedding"].shape == (4, 128)
    assert batch["motion"].shape == (4, 2) and batch["motion"].dtype == torch.float32
    idx = batch["face_embedding"][:, 0]
    expected = torch.stack([(0.1 * idx).clamp(0, 1), (0.05 * idx / 0.5).clamp(0, 1)], -1)
    assert torch.allclose(batch["motion"], expected, atol=1e-6)
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1
    assert batch["prompt"] == [f"prompt {k}" for k in batch["key"]]
    assert set(batch) == {"video", "audio", "lip_mask", "landmarks", "face", "face_embedding", "motion", "prompt",
                          "key"}  # fmt: skip


def test_every_clip_once_per_epoch_and_reshuffled(shard_dir):
    dm = TalkingClipDataModule(shard_dir, batch_size=3, shuffle_buffer=4, fields=("audio",), seed=7)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first, second = _keys(loader), _keys(loader)
    assert sorted(first) == sorted(second) == [f"clip_{i:02d}" for i in range(12)]
    assert first != second  # a new shard order and sample shuffle each epoch
    again = TalkingClipDataModule(shard_dir, batch_size=3, shuffle_buffer=4, fields=("audio",), seed=7)
    again.setup("fit")
    assert _keys(again.train_dataloader()) == first  # deterministic given the seed


def test_windows_cut_every_field_at_the_same_frame(shard_dir):
    dm = TalkingClipDataModule(shard_dir, batch_size=2, num_frames=5, shuffle_buffer=1, seed=3)
    dm.setup("fit")
    starts = set()
    for batch in dm.train_dataloader():
        assert batch["video"].shape[2] == 5 and batch["audio"].shape == (2, round(5 * SR / FPS))
        for b in range(2):
            s = int(batch["landmarks"][b, 0, 0, 0])
            starts.add(s)
            assert batch["landmarks"][b, :, 0, 0].tolist() == list(range(s, s + 5))
            grey = (batch["video"][b, 0, :, S // 2, S // 2] + 1) * 127.5  # frame j is grey 20 * j
            assert torch.allclose(grey, 20.0 * torch.arange(s, s + 5), atol=6)
            assert batch["audio"][b, 0] == round(s * SR / FPS)
    assert len(starts) > 1  # random windows in training
    val = TalkingClipDataModule(shard_dir, batch_size=2, num_frames=5, val_fraction=0.34)
    val.setup("fit")
    assert all(int(b["landmarks"][i, 0, 0, 0]) == 0 for b in val.val_dataloader() for i in range(len(b["key"])))


def test_split_by_shard_is_deterministic(shard_dir):
    shards = list_shards(shard_dir)
    assert len(shards) == 6 and list_shards(str(shard_dir / "shard-*.tar")) == shards
    train, val = split_shards(shards, val_fraction=0.34, seed=0)
    assert len(val) == 2 and sorted(train + val) == shards and not set(train) & set(val)
    assert split_shards(list(reversed(shards)), val_fraction=0.34, seed=0) == (train, val)
    assert len({tuple(split_shards(shards, val_fraction=0.34, seed=k)[1]) for k in range(10)}) > 1  # seed matters
    explicit_train, explicit_val = split_shards(shards, val_shards=[shards[0]])
    assert explicit_val == [shards[0]] and shards[0] not in explicit_train
    with pytest.raises(InputError, match="at least 2 shards"):
        split_shards(shards[:1], val_fraction=0.5)


def test_nodes_and_workers_get_disjoint_shards(shard_dir, monkeypatch):
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        dm = TalkingClipDataModule(shard_dir, batch_size=1, fields=("audio",), shuffle_buffer=1, seed=2)
        dm.setup("fit")
        seen.append(_keys(dm.train_dataloader()))
    assert len(seen[0]) == len(seen[1]) == 6 and not set(seen[0]) & set(seen[1])
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    dm = TalkingClipDataModule(shard_dir, batch_size=1, num_workers=2, fields=("audio",), shuffle_buffer=1)
    dm.setup("fit")
    keys = _keys(dm.train_dataloader())
    assert sorted(keys) == [f"clip_{i:02d}" for i in range(12)]  # two worker processes, each clip once


def test_corrupt_samples_are_counted_and_logged(shard_dir, tmp_path, caplog):
    root = tmp_path / "ds"
    root.mkdir()
    for p in shard_dir.iterdir():
        (root / p.name).write_bytes(p.read_bytes())
    bad = _sample("bad_00", 0, tmp_path, video=b"\x00garbage, not an mp4")
    missing = _sample("bad_01", 1, tmp_path)
    del missing[fmt.LANDMARKS]
    _write_shard(root / fmt.shard_name(6), {"bad_00": bad, "bad_01": missing})
    whole = (root / fmt.shard_name(5)).read_bytes()
    (root / fmt.shard_name(5)).write_bytes(whole[: len(whole) // 2])  # truncated
    dm = TalkingClipDataModule(root, batch_size=2, num_workers=2, shuffle_buffer=1, drop_last=False)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="fantasytalking.data"):
        keys = _keys(dm.train_dataloader())
    assert "bad_00" not in keys and "bad_01" not in keys and len(keys) >= 10
    assert dm.corrupt_samples >= 3  # counted in the worker processes, visible here
    dm0 = TalkingClipDataModule(root, batch_size=2, num_workers=0, shuffle_buffer=1, drop_last=False)
    dm0.setup("fit")
    with caplog.at_level(logging.WARNING, logger="fantasytalking.data"):
        _keys(dm0.train_dataloader())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "bad_00" in text and "video.mp4 does not decode" in text
    assert "bad_01" in text and "landmarks.npy" in text
    assert fmt.shard_name(5) in text


def test_setup_errors_are_clear(shard_dir, tmp_path):
    with pytest.raises(InputError, match="unknown fields"):
        TalkingClipDataModule(shard_dir, fields=("video", "depth"))
    with pytest.raises(InputError, match="no shard"):
        TalkingClipDataModule(tmp_path).setup("fit")
    dm = TalkingClipDataModule(shard_dir, fields=("video", "latents"))
    with pytest.raises(InputError, match="--cache-latents"):
        dm.setup("fit")
    with pytest.raises(InputError, match="23 fps"):
        TalkingClipDataModule(shard_dir, fps=25).setup("fit")
    with pytest.raises(InputError, match="9-frame clips"):
        TalkingClipDataModule(shard_dir, num_frames=13).setup("fit")
    lone = tmp_path / "nostats"
    lone.mkdir()
    (lone / "shard-000000.tar").write_bytes((shard_dir / "shard-000000.tar").read_bytes())
    with pytest.raises(InputError, match="motion statistics not found"):
        TalkingClipDataModule(lone).setup("fit")
    TalkingClipDataModule(lone, fields=("video",)).setup("fit")  # fine without motion


def test_motion_stats_of_another_clip_length_warn(shard_dir, caplog):
    """Raw motion grows with clip length: statistics of N-frame clips mis-scale the labels of other clips."""
    stats = json.loads((shard_dir / fmt.STATS).read_text())
    with caplog.at_level(logging.WARNING, logger="fantasytalking.data"):
        TalkingClipDataModule(shard_dir, motion_stats={**stats, "clip_frames": [N]}).setup("fit")
        older = {k: v for k, v in stats.items() if k != "clip_frames"}
        TalkingClipDataModule(shard_dir, motion_stats=older).setup("fit")
        assert not caplog.records  # the same length (and tables without clip_frames) pass quietly
        TalkingClipDataModule(shard_dir, motion_stats={**stats, "clip_frames": [4 * N]}).setup("fit")
    assert len(caplog.records) == 1 and f"{4 * N} frames" in caplog.text and f"{N}-frame clips" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fantasytalking.data"):  # no motion field, no labels
        TalkingClipDataModule(shard_dir, fields=("video",), motion_stats={**stats, "clip_frames": [4 * N]}).setup("fit")
    assert not caplog.records


def test_collate():
    a = {"x": torch.zeros(2), "key": "a"}
    b = {"x": torch.ones(2), "key": "b"}
    out = collate_clips([a, b])
    assert out["x"].shape == (2, 2) and out["key"] == ["a", "b"]


class _Probe(L.LightningModule):
    """Consumes batches like a training stage would (a linear map of the mean frame)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        self.seen.extend(batch["key"])
        x = batch["video"].mean(dim=(2, 3, 4))  # (B, 3)
        return (self.layer(x) - batch["motion"][:, :1]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch["video"].mean(dim=(2, 3, 4))).mean(), batch_size=len(batch["key"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("resampled", [False, True])
def test_lightning_fit(shard_dir, tmp_path, resampled):
    dm = TalkingClipDataModule(shard_dir, batch_size=2, val_fraction=0.34, resampled=resampled,
                               epoch_length=3 if resampled else None)  # fmt: skip
    model = _Probe()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == (2 * 3 * 2 if resampled else 2 * 8)  # 2 epochs of 3 batches, or of the 8 train clips
    assert "val_loss" in trainer.callback_metrics and dm.corrupt_samples == 0


def test_face_embedding_stats_are_over_the_training_samples(shard_dir):
    dm = TalkingClipDataModule(shard_dir, batch_size=2, val_fraction=0.34)
    dm.setup("fit")
    keys = {k for shard in dm.train_shards for k in _shard_keys(shard)}
    values = np.array([int(k.split("_")[1]) for k in keys], np.float64)  # each clip's embedding is its index
    mean, std = dm.face_embedding_stats()
    assert mean.shape == std.shape == (128,) and len(keys) == 8
    assert np.allclose(mean, values.mean()) and np.allclose(std, values.std())


def test_face_standardize_folds_the_statistics_into_a_fresh_conditioner(shard_dir, tmp_path):
    """face.standardize: the fresh conditioner's input_proj reads (x - mean) / std when fit starts, once; a start
    from init_from keeps the weights it brings."""
    from fantasytalking.training import StageOneClipAligner

    face = {"face_dim": 128, "dim": 32, "num_queries": 4, "num_layers": 1, "num_heads": 2, "standardize": True}

    def fit(module, steps=1):
        dm = TalkingClipDataModule(shard_dir, batch_size=2, val_fraction=0.34)
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                            limit_val_batches=0)  # fmt: skip
        trainer.fit(module, datamodule=dm)
        return dm

    torch.manual_seed(0)
    module = StageOneClipAligner(backbone={"preset": "tiny"}, face=face, optim={"lr": 0.0, "weight_decay": 0.0})
    proj = module.conditioning["face"].input_proj
    fresh_w, fresh_b = proj.weight.detach().clone(), proj.bias.detach().clone()
    dm = fit(module)
    mean, std = (torch.from_numpy(a) for a in dm.face_embedding_stats())
    x = torch.randn(3, 128) * 4 + 5
    expected = ((x - mean) / std) @ fresh_w.T + fresh_b
    assert torch.allclose(proj(x), expected, rtol=1e-4, atol=1e-3)
    folded = proj.weight.detach().clone()
    fit(module)  # a second fit does not fold the statistics again
    assert torch.equal(proj.weight.detach(), folded)

    export = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict()}, export)
    restarted = StageOneClipAligner(backbone={"preset": "tiny"}, face=face, optim={"lr": 0.0, "weight_decay": 0.0})
    restarted.conditioning["face"].load_state_dict(module.conditioning["face"].state_dict())
    restarted.init_from = str(export)  # as if loaded from it: the weights already read standardised features
    fit(restarted)
    assert torch.equal(restarted.conditioning["face"].input_proj.weight.detach(), folded)

    # an export trained WITHOUT a face path (the paper's ablation) as init_from: its weights are loaded, and the
    # face path, absent from it, starts fresh and is standardised like a first fit's
    from fantasytalking.training.export import export_conditioning

    torch.manual_seed(1)
    noface = StageOneClipAligner(backbone={"preset": "tiny"}, optim={"lr": 0.0, "weight_decay": 0.0})
    ablation = export_conditioning(noface, tmp_path / "noface.safetensors")
    torch.manual_seed(2)
    grown = StageOneClipAligner(backbone={"preset": "tiny"}, face=face, optim={"lr": 0.0, "weight_decay": 0.0},
                                init_from=str(ablation))  # fmt: skip
    audio = grown.conditioning["audio"].proj_model.proj.weight
    assert torch.equal(audio, noface.conditioning["audio"].proj_model.proj.weight)  # the export's weights
    proj = grown.conditioning["face"].input_proj
    fresh_w, fresh_b = proj.weight.detach().clone(), proj.bias.detach().clone()
    branches = [p.branches["face"].k_proj.weight for p in grown.transformer.processors]
    assert all(not b.any() for b in branches)  # the fresh face branches start at zero
    fit(grown)
    assert torch.allclose(proj(x), ((x - mean) / std) @ fresh_w.T + fresh_b, rtol=1e-4, atol=1e-3)


def _shard_keys(shard: str) -> set[str]:
    with tarfile.open(shard) as tar:
        return {m.name.split(".", 1)[0] for m in tar}
