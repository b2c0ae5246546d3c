"""Exponential moving average of the trained weights, as a Lightning callback.

The average is kept in float32 beside the trainable parameters (same device), updated after every
optimiser step, saved in the checkpoint (so a resumed run continues the same average) and swapped
in for validation. Export it with ``export_conditioning(module, path, ema=callback)`` or
``export_checkpoint(ckpt, path, use_ema=True)``.

FSDP shards parameters across ranks and Lightning writes callback state from rank 0 only, so the
callback refuses FSDP; use it with one device or DDP.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy

from fantasytalking.errors import InputError


class EMACallback(pl.Callback):
    """EMA of every parameter with ``requires_grad`` of the LightningModule.

    Args:
        decay: EMA decay per update (0.9999 for long runs).
        update_every: update once every this many optimiser steps.
        start_step: optimiser steps before the average starts (it is a copy until then).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not
            dominated by the initial weights.
        validate_with_ema: swap the average in during validation.
    """

    def __init__(
        self,
        decay: float = 0.9999,
        update_every: int = 1,
        start_step: int = 0,
        warmup: bool = False,
        validate_with_ema: bool = True,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise InputError(f"EMA decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.update_every = max(1, int(update_every))
        self.start_step = start_step
        self.warmup = warmup
        self.validate_with_ema = validate_with_ema
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0
        self._last_step = -1
        self._backup: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _trainable(pl_module: pl.LightningModule) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in pl_module.named_parameters() if p.requires_grad}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            raise InputError("EMACallback does not support FSDP (sharded parameters); remove it or use DDP.")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = self._trainable(pl_module)
        if self.shadow:  # restored from a checkpoint
            if set(self.shadow) != set(params):
                missing = sorted(set(params) - set(self.shadow))[:1] or sorted(set(self.shadow) - set(params))[:1]
                raise InputError(
                    f"the checkpoint's EMA does not match the trained parameters (e.g. {missing[0]}); "
                    "resume with the same trainable settings."
                )
            self.shadow = {k: v.to(params[k].device) for k, v in self.shadow.items()}
        else:
            self.shadow = {k: p.detach().float().clone() for k, p in params.items()}
        self._last_step = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # no optimiser step in this batch (gradient accumulation)
            return
        self._last_step = step
        if step % self.update_every:
            return
        decay = 0.0 if step <= self.start_step else self.current_decay()
        for name, p in self._trainable(pl_module).items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - decay)
        self.num_updates += 1

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    # ------------------------------------------------------------------ validation swap

    @torch.no_grad()
    def swap_in(self, pl_module: pl.LightningModule) -> None:
        """Put the average into the module (the trained weights are kept aside until :meth:`swap_out`)."""
        if not self.shadow or self._backup is not None:
            return
        params = self._trainable(pl_module)
        self._backup = {k: p.detach().clone() for k, p in params.items()}
        for k, p in params.items():
            p.copy_(self.shadow[k])

    @torch.no_grad()
    def swap_out(self, pl_module: pl.LightningModule) -> None:
        if self._backup is None:
            return
        for k, p in self._trainable(pl_module).items():
            p.copy_(self._backup[k])
        self._backup = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validate_with_ema and trainer.state.fn == "fit":
            self.swap_in(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.swap_out(pl_module)

    # ------------------------------------------------------------------ checkpoint

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights by the LightningModule's parameter names."""
        return dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = int(state_dict["num_updates"])
        self.shadow = {k: v.float() for k, v in state_dict["shadow"].items()}
