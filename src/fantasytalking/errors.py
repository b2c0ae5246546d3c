"""User-facing errors.

Every error a user can cause (a bad input file, a missing or mismatched weight) is raised as a
:class:`FantasyTalkingError` whose message is one line that says what is wrong and what to do.
The CLI prints that line and exits non-zero; library users can catch the class.
"""

from __future__ import annotations

import math


class FantasyTalkingError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is a single actionable line."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))


class InputError(FantasyTalkingError, ValueError):
    """An input file or argument (image, audio, output path, setting) is unusable."""


class WeightsError(FantasyTalkingError, RuntimeError):
    """A weight file is missing, unreadable, corrupt, or does not match the model."""


def non_negative(value: float, name: str, meaning: str = "") -> float:
    """``value`` as a float when it is a finite number >= 0 (a branch weight, a gain), else an :class:`InputError`
    naming it as the caller calls it (``name``: ``"face scale"``, ``"--face-scale"``), with what some values mean."""
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        hint = f" ({meaning})" if meaning else ""
        raise InputError(f"{name} must be a finite number >= 0{hint}, got {value}.")
    return value
