"""Fair admission: each principal may have at most MAX_PENDING_PER_PRINCIPAL unfinished events.

MAX_PENDING_EVENTS bounds the whole queue; without a share per principal, one tenant's long
uploads fill it and everyone else gets 503. Past its own share a principal gets 429 (naming
the setting) while others are still admitted.

A principal's unfinished events are counted in the store (so every API process and every
outcome is seen), at most every REFRESH_S per principal, plus what this process admitted
since that count began: the events still in intake and those stored after the count started.
An event stored just before the count may be counted twice (refusing early, never late);
other API processes' admissions are seen at the next refresh, so across N processes a
principal can pass its share by what N-1 of them admit within REFRESH_S.

Usage (on the event loop)::

    admission = PrincipalAdmission(store.count_active_of, limit=250)
    ticket = await admission.admit(owner)
    if ticket.refusal is not None:
        raise ticket.refusal
    ...
    ticket.done(created=True)          # always, once intake is over
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from skyhigh.domain.errors import QuotaExceeded

REFRESH_S = 0.25
_MAX_TRACKED = 10_000  # principals remembered between requests


@dataclass
class _Pending:
    counted: int = 0  # unfinished events in the store at `counted_at`
    counted_at: float = float("-inf")  # when that count began (monotonic)
    in_intake: int = 0  # admitted here, not yet stored or dropped
    stored: deque[float] = field(default_factory=deque)  # when this process stored one since
    refresh: anyio.Event | None = None  # set while a count is in flight

    def total(self) -> int:
        return self.counted + self.in_intake + len(self.stored)


class Ticket:
    """One admission: `refusal` is the error to raise, or None; `done` ends it."""

    def __init__(self, pending: _Pending | None, refusal: QuotaExceeded | None) -> None:
        self._pending = pending
        self.refusal = refusal

    def done(self, *, created: bool) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        pending.in_intake -= 1
        if created:
            pending.stored.append(time.monotonic())


class PrincipalAdmission:
    def __init__(
        self, count_active_of: Callable[[str], int], *, limit: int, retry_after_s: int = 5
    ) -> None:
        self._count = count_active_of
        self._limit = limit
        self._retry_after_s = retry_after_s
        self._pending: dict[str, _Pending] = {}

    async def admit(self, owner: str) -> Ticket:
        pending = await self._refreshed(owner)
        if pending.total() >= self._limit:
            return Ticket(
                None,
                QuotaExceeded(
                    f"you have {pending.total()} unfinished events, the most one principal may "
                    f"have (MAX_PENDING_PER_PRINCIPAL={self._limit}); wait for some to finish",
                    retry_after_s=self._retry_after_s,
                ),
            )
        pending.in_intake += 1
        return Ticket(pending, None)

    async def _refreshed(self, owner: str) -> _Pending:
        pending = self._pending.get(owner)
        if pending is None:
            if len(self._pending) >= _MAX_TRACKED:
                self._forget_idle()
            pending = self._pending[owner] = _Pending()
        started = time.monotonic()
        if pending.refresh is not None:
            # One count in flight per principal: a burst of requests once sent one query each
            # (p99 doubled under load). Until a first count lands, wait for it; after that the
            # last count plus this process's admissions since it began still never under-count.
            if pending.counted_at == float("-inf"):
                await pending.refresh.wait()
            return pending
        if started - pending.counted_at > REFRESH_S:
            pending.refresh = anyio.Event()
            try:
                counted = await anyio.to_thread.run_sync(self._count, owner)
            finally:
                pending.refresh.set()
                pending.refresh = None
            pending.counted, pending.counted_at = counted, started
            while pending.stored and pending.stored[0] < started:
                pending.stored.popleft()
        return pending

    def _forget_idle(self) -> None:
        now = time.monotonic()
        self._pending = {
            owner: pending
            for owner, pending in self._pending.items()
            if pending.in_intake or now - pending.counted_at <= REFRESH_S
        }
