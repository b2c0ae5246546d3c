"""User-facing errors.

Every error a user can cause (a bad input file, a missing or mismatched weight) is raised as a
:class:`FantasyTalkingError` whose message is one line that says what is wrong and what to do.
The CLI prints that line and exits non-zero; library users can catch the class.
"""

from __future__ import annotations


class FantasyTalkingError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` is a single actionable line."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))


class InputError(FantasyTalkingError, ValueError):
    """An input file or argument (image, audio, output path, setting) is unusable."""


class WeightsError(FantasyTalkingError, RuntimeError):
    """A weight file is missing, unreadable, corrupt, or does not match the model."""
