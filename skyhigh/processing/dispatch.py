"""Dispatchers hand accepted event ids to workers.

The in-process dispatcher runs `Pipeline.process` on a pool of threads inside the API
process (the embedded default). The Celery dispatcher (skyhigh.processing.celery_dispatch)
implements the same protocol by sending the id to a broker; its workers call the same
`Pipeline.process`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from skyhigh.observability.metrics import QUEUE_DEPTH

log = logging.getLogger("skyhigh.processing.dispatch")


class Dispatcher(Protocol):
    kind: str  # shown in /status

    def start(self, recovered: list[str]) -> None:
        """Begin work, first re-dispatching events a crash left unfinished."""

    def reserve(self) -> bool:
        """Claim room for one more event; False when MAX_PENDING_EVENTS is reached."""

    def release(self) -> None:
        """Give back a reservation that did not turn into a new event."""

    def submit(self, event_id: str, *, event_type: str) -> None:
        """Dispatch a stored event (uses the caller's reservation); must not block."""

    def pending(self) -> int:
        """Events accepted and not yet finished."""

    def stop(self, *, grace_s: float) -> list[str]:
        """Stop taking work; wait up to grace_s for running events; return the unfinished."""

    def ping(self) -> None:
        """Raise when the dispatcher cannot take work (readiness): e.g. the broker is down."""


_STOP = object()


class InProcessDispatcher:
    kind = "in-process"

    """A bounded queue and WORKER_CONCURRENCY threads.

    Usage::

        dispatcher = InProcessDispatcher(pipeline.process, concurrency=1, max_pending=1000)
        dispatcher.start(store.recover())
        if dispatcher.reserve():
            dispatcher.submit("event-1", event_type="query")
        dispatcher.stop(grace_s=30)
    """

    def __init__(
        self, process: Callable[[str], None], *, concurrency: int, max_pending: int
    ) -> None:
        self._process = process
        self._concurrency = concurrency
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self, recovered: list[str]) -> None:
        with self._lock:
            # Recovered events count against the limit too: they are real pending work.
            self._pending += len(recovered)
        for event_id in recovered:
            self._queue.put(event_id)
        self._update_gauge()
        for index in range(self._concurrency):
            thread = threading.Thread(
                target=self._work, name=f"skyhigh-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if recovered:
            log.info("recovered unfinished events", extra={"count": len(recovered)})

    def reserve(self) -> bool:
        with self._lock:
            if self._stopping.is_set() or self._pending >= self._max_pending:
                return False
            self._pending += 1
        self._update_gauge()
        return True

    def release(self) -> None:
        with self._lock:
            self._pending -= 1
        self._update_gauge()

    def submit(self, event_id: str, *, event_type: str) -> None:
        del event_type  # one pool runs every type
        self._queue.put(event_id)

    def pending(self) -> int:
        return self._pending

    def ping(self) -> None:
        """Threads in this process: ready while they run."""

    def stop(self, *, grace_s: float) -> list[str]:
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            return sorted(self._running)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._stopping.is_set():
                # Queued events stay `queued` in the store; the next start recovers them.
                return
            assert isinstance(item, str)
            with self._lock:
                self._running.add(item)
            try:
                self._process(item)
            except Exception:
                log.exception("worker survived an unexpected error")
            finally:
                with self._lock:
                    self._running.discard(item)
                    self._pending -= 1
                self._update_gauge()

    def _update_gauge(self) -> None:
        QUEUE_DEPTH.set(self._pending)
