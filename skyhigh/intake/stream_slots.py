"""Live streams per principal: at most MAX_STREAMS_PER_PRINCIPAL open at once (429 past it).

Each open SSE or WebSocket stream holds a connection, a subscription and a task for as long
as its event runs, and a principal may open any number of them for the same event; the cap
keeps one principal from holding thousands. Counted in this API process (streams live in
the process that serves them), so behind N API processes a principal may hold N times it.

Usage::

    slots = StreamSlots(limit=32)
    with slots.hold(principal.owner):     # raises QuotaExceeded past the limit
        ...stream...
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from skyhigh.domain.errors import QuotaExceeded

RETRY_AFTER_S = 5


class StreamSlots:
    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, owner: str) -> None:
        with self._lock:
            count = self._open.get(owner, 0)
            if count >= self.limit:
                raise QuotaExceeded(
                    f"{count} live streams are open for you, the most one principal may hold "
                    f"(MAX_STREAMS_PER_PRINCIPAL={self.limit}); close one first",
                    retry_after_s=RETRY_AFTER_S,
                )
            self._open[owner] = count + 1

    def release(self, owner: str) -> None:
        with self._lock:
            count = self._open.get(owner, 0) - 1
            if count > 0:
                self._open[owner] = count
            else:
                self._open.pop(owner, None)

    @contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        self.acquire(owner)
        try:
            yield
        finally:
            self.release(owner)

    def open_streams(self, owner: str) -> int:
        return self._open.get(owner, 0)
