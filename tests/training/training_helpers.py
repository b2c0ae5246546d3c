"""Shared pieces of the training tests: tiny modules, synthetic batches, a short Trainer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import default_collate

from fantasytalking.training import FantasyTalkingModule, StageOneClipAligner, SyntheticTalkingDataset

FACE = {"face_dim": 128, "dim": 32, "num_queries": 4, "num_layers": 1, "num_heads": 2}
MOTION = {"hidden_dim": 32, "num_frequencies": 4}


def tiny_module(cls: type[FantasyTalkingModule] = StageOneClipAligner, *, face: bool = False, motion: bool = False,
                **kwargs: Any) -> FantasyTalkingModule:  # fmt: skip
    kwargs.setdefault("optim", {"lr": 1e-3})
    kwargs.setdefault("backbone", {"preset": "tiny"})
    return cls(face=FACE if face else None, motion=MOTION if motion else None, **kwargs)


def synthetic_batch(batch_size: int = 2, *, identical: bool = False, seed: int = 0, num_frames: int = 9,
                    size: int = 32) -> dict[str, Any]:  # fmt: skip
    data = SyntheticTalkingDataset(batch_size, num_frames=num_frames, size=size, seed=seed, identical=identical)
    return default_collate([data[i] for i in range(batch_size)])


class LossRecorder(pl.Callback):
    """Records the training loss of every step (on CPU, as floats)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def trainer(root: Path, max_steps: int, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    settings = dict(
        accelerator="cpu", devices=1, max_steps=max_steps, callbacks=callbacks, default_root_dir=str(root),
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    return pl.Trainer(**{**settings, **kwargs})


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and 2-core CI machines stall badly when OpenMP threads
    compete with another process for the cores; restore the setting after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
