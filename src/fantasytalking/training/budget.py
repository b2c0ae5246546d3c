"""A wall-clock budget for a training run: the number of steps is measured, not guessed.

On a device you have not timed yet (a lent GPU, a new node), a run with a fixed ``max_steps`` either stops
early (``trainer.max_time`` cuts it with the learning rate still high) or leaves time unused.
:class:`TimeBudget` times the first optimiser steps, then sets ``max_steps`` so that the run ends within
``seconds`` of its first batch, and stretches or shrinks the learning-rate schedule to that length, so a
cosine schedule still ends at its minimum::

    trainer:
      max_steps: 100000            # an upper bound
      callbacks:
        - class_path: fantasytalking.training.TimeBudget
          init_args: {seconds: 240, probe_steps: 40}

The chosen length is kept in the checkpoint's callback state, so a resumed run keeps it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl

from fantasytalking.errors import InputError

__all__ = ["TimeBudget"]

log = logging.getLogger(__name__)


class TimeBudget(pl.Callback):
    """Set ``max_steps`` (and the LR schedule's length) from the measured step time.

    Args:
        seconds: wall-clock budget of the training loop, from the first training batch on.
        probe_steps: optimiser steps timed before the length is chosen.
        skip_steps: steps before the probe that are not timed (start-up: workers, allocator, caches).
        safety: share of the remaining budget the chosen steps may fill (the rest absorbs checkpoints and jitter).
    """

    def __init__(self, seconds: float, probe_steps: int = 30, skip_steps: int = 10, safety: float = 0.95) -> None:
        if not (math.isfinite(seconds) and seconds > 0):
            raise InputError(f"TimeBudget seconds must be a positive number, got {seconds}")
        if probe_steps < 1 or skip_steps < 0:
            raise InputError(f"TimeBudget needs probe_steps >= 1 and skip_steps >= 0, got {probe_steps}, {skip_steps}")
        if not 0 < safety <= 1:
            raise InputError(f"TimeBudget safety must be in (0, 1], got {safety}")
        self.seconds, self.probe_steps, self.skip_steps, self.safety = float(seconds), probe_steps, skip_steps, safety
        self.chosen_steps: int | None = None
        self.seconds_per_step: float | None = None
        self._start: float | None = None
        self._probe_start: float | None = None

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()
        self._probe_start = self._start if self.skip_steps == 0 else None
        if self.chosen_steps is not None:  # resumed: keep the length chosen before
            self._apply(trainer, self.chosen_steps)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if self.chosen_steps is not None or self._start is None:
            return
        step = trainer.global_step
        if step == self.skip_steps and self._probe_start is None:
            self._probe_start = time.monotonic()
        if self._probe_start is None or step < self.skip_steps + self.probe_steps:
            return
        now = time.monotonic()
        self.seconds_per_step = (now - self._probe_start) / self.probe_steps
        remaining = self.seconds - (now - self._start)
        more = int(max(0.0, remaining) * self.safety / self.seconds_per_step)
        upper = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else step + more
        self._apply(trainer, max(step + 1, min(upper, step + more)))
        log.warning("time budget %.0f s: %.3f s a step over steps %d-%d, so max_steps = %d",
                    self.seconds, self.seconds_per_step, self.skip_steps, step, self.chosen_steps)  # fmt: skip

    def _apply(self, trainer: pl.Trainer, steps: int) -> None:
        self.chosen_steps = int(steps)
        trainer.fit_loop.epoch_loop.max_steps = self.chosen_steps
        for config in trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                if hasattr(schedule, "total"):  # FantasyTalkingModule's schedule: its length follows the run
                    schedule.total = max(self.chosen_steps, 1)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"chosen_steps": self.chosen_steps, "seconds_per_step": self.seconds_per_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.chosen_steps = state_dict.get("chosen_steps")
        self.seconds_per_step = state_dict.get("seconds_per_step")
