"""Domain exceptions raised by the core; the web layer maps each to HTTP in one place."""

from __future__ import annotations

from skyhigh.domain.events import StepFailed


class Interrupted(Exception):
    """A step's child process (ffmpeg) was stopped by a signal, as a shutdown that signals the
    whole process group or cgroup does: the event goes back to the queue, never to failed."""


class EventNotFound(Exception):
    """No event with this id exists."""


class EventConflict(Exception):
    """The event id is taken by an event with a different body."""


class InvalidCursor(Exception):
    """A pagination cursor that this store did not issue."""


class InvalidInput(StepFailed):
    """Intake refused part of a request; `loc` says where, as in a validation error.

    Usage::

        raise InvalidInput("empty_audio", "the uploaded file is empty", loc=("body", "file"))
    """

    def __init__(self, code: str, message: str, *, loc: tuple[str, ...]) -> None:
        super().__init__(code, message)
        self.loc = loc

    @classmethod
    def at(cls, failure: StepFailed, *loc: str) -> InvalidInput:
        return cls(failure.code, failure.message, loc=loc)


class QueueFull(Exception):
    """MAX_PENDING_EVENTS events are pending; the client should retry after a delay."""

    def __init__(self, *, max_pending: int, retry_after_s: int) -> None:
        super().__init__(f"too many pending events (MAX_PENDING_EVENTS={max_pending}); retry later")
        self.retry_after_s = retry_after_s


class QuotaExceeded(Exception):
    """The principal used up a rate or audio quota; retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
