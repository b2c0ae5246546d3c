"""TimeBudget: the run's length is chosen from the measured step time, and the LR schedule follows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from training_helpers import one_thread, tiny_module, trainer  # noqa: F401 (one_thread: fixture)

from fantasytalking.errors import InputError
from fantasytalking.training import SyntheticTalkingDataModule, TimeBudget
from fantasytalking.training import budget as budget_module


class Clock(pl.Callback):
    """A fake monotonic clock: each optimiser step takes ``step_seconds`` (registered before TimeBudget)."""

    def __init__(self, step_seconds: float) -> None:
        self.now, self.step_seconds = 1000.0, step_seconds

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self.now += self.step_seconds


def test_time_budget_sets_max_steps_and_the_schedule_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(step_seconds=2.0)
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: clock.now)
    budget = TimeBudget(seconds=40, probe_steps=3, skip_steps=2, safety=1.0)
    module = tiny_module(optim={"lr": 1e-3, "schedule": "cosine", "warmup_steps": 1, "min_lr_ratio": 0.1})
    run = trainer(tmp_path, max_steps=1000, callbacks=[clock, budget])
    run.fit(module, datamodule=SyntheticTalkingDataModule(num_samples=4, batch_size=2))
    # 2 s a step over steps 2-5; at step 5, 10 s of the 40 are spent: 30 s more is 15 steps, so 20 in all
    assert budget.seconds_per_step == pytest.approx(2.0)
    assert budget.chosen_steps == 20 and run.global_step == 20
    schedule = run.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert schedule.total == 20 and schedule(20) == pytest.approx(0.1)  # the cosine ends at its minimum
    assert budget.state_dict()["chosen_steps"] == 20


def test_time_budget_keeps_the_upper_bound_and_restores_its_choice(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    clock = Clock(step_seconds=0.001)
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: clock.now)
    budget = TimeBudget(seconds=3600, probe_steps=2, skip_steps=0)
    run = trainer(tmp_path, max_steps=6, callbacks=[clock, budget])
    run.fit(tiny_module(), datamodule=SyntheticTalkingDataModule(num_samples=4, batch_size=2))
    assert budget.chosen_steps == 6 and run.global_step == 6  # fast steps: the trainer's max_steps still bounds it
    restored = TimeBudget(seconds=1)
    restored.load_state_dict(budget.state_dict())
    assert restored.chosen_steps == 6


@pytest.mark.parametrize("kwargs", [{"seconds": 0}, {"seconds": float("nan")}, {"seconds": 10, "probe_steps": 0},
                                    {"seconds": 10, "safety": 1.5}])  # fmt: skip
def test_time_budget_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        TimeBudget(**kwargs)
