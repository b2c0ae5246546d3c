"""Run by ``test_training_ddp.py``: a few DDP steps of the tiny preset on two CPU processes (gloo).

    python tests/training/training_ddp_worker.py OUT_DIR

Lightning's launcher starts the second rank by running this script again. Each rank writes
``OUT_DIR/rank<r>.pt`` with its trained weights and the losses it saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from fantasytalking.training import StageOneClipAligner, SyntheticTalkingDataModule


class DumpWeights(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.losses: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = {k: p.detach().cpu().clone() for k, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        weights = {k: p.detach().cpu().clone() for k, p in pl_module.named_parameters() if p.requires_grad}
        torch.save({"weights": weights, "start": self.start, "losses": self.losses, "world_size": trainer.world_size},
                   self.out / f"rank{trainer.global_rank}.pt")  # fmt: skip


def main(out: Path) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0)
    module = StageOneClipAligner(
        backbone={"preset": "tiny"},
        face={"face_dim": 128, "dim": 32, "num_queries": 4, "num_layers": 1, "num_heads": 2},
        motion={"hidden_dim": 32},
        optim={"lr": 1e-3},
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=3, callbacks=[DumpWeights(out)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out),
    )  # fmt: skip
    trainer.fit(module, datamodule=SyntheticTalkingDataModule(num_samples=12, batch_size=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
