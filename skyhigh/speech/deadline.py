"""The transcription deadline (MAX_TRANSCRIBE_SECONDS), checked between decode steps.

Engines and runners call `check` before each step (a batch of chunks, a chunk's result, a
30-second window), so a clip that takes too long stops within one step of its deadline instead
of running to its end.
"""

from __future__ import annotations

import time


class TranscriptionTimeout(TimeoutError):
    """The transcription ran past its deadline; what was decoded so far is discarded."""


class Deadline:
    """A moment `seconds` from now (on the monotonic clock) past which transcription stops."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (0 once it has passed)."""
        return max(self._at - time.monotonic(), 0.0)


def check(deadline: Deadline | None) -> None:
    """Raise TranscriptionTimeout once `deadline` has passed."""
    if deadline is not None and deadline.remaining() <= 0:
        raise TranscriptionTimeout("transcription deadline passed")


def remaining(deadline: Deadline | None) -> float | None:
    """Seconds left before `deadline`, or None without one."""
    return None if deadline is None else deadline.remaining()
