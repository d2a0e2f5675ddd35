"""Dispatchers hand accepted events' keys to workers.

The in-process dispatcher runs `Pipeline.process` on a pool of threads inside the API
process (the embedded default). The Celery dispatcher (skyhigh.processing.celery_dispatch)
implements the same protocol by sending the key to a broker; its workers call the same
`Pipeline.process`.

Fairness: the in-process queue serves principals in turn (`FairQueue`), so one principal's
backlog of long files delays another principal's event by at most one event per principal
ahead of it, not by the whole backlog. Celery workers get the same order from the store
(skyhigh.store.event_leases.claim_next), whatever order the broker delivers messages in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from skyhigh.domain.tenancy import fairness_group
from skyhigh.observability.metrics import QUEUE_DEPTH, WORKER_YIELD_SECONDS
from skyhigh.processing.burst_gate import BurstGate

log = logging.getLogger("skyhigh.processing.dispatch")


class Dispatcher(Protocol):
    kind: str  # shown in /status

    def start(self, recovered: list[str]) -> None:
        """Begin work, first re-dispatching events a crash left unfinished."""

    def reserve(self) -> bool:
        """Claim room for one more event; False when MAX_PENDING_EVENTS is reached."""

    def release(self) -> None:
        """Give back a reservation that did not turn into a new event."""

    def submit(self, key: str, *, event_type: str) -> None:
        """Dispatch a stored event (uses the caller's reservation); must not block."""

    def pending(self) -> int:
        """Events accepted and not yet finished."""

    def stop(self, *, grace_s: float) -> list[str]:
        """Stop taking work; wait up to grace_s for running events; return the unfinished."""

    def ping(self) -> None:
        """Raise when the dispatcher cannot take work (readiness): e.g. the broker is down."""


class FairQueue:
    """Event keys queued per owner, served in turn across owners (FIFO within one).

    Fair queuing with a virtual clock: each owner has a tag, the number of turns it has had;
    the owner with the lowest tag goes next, and an owner arriving (or returning after being
    idle) starts at the current clock, so it neither waits behind a backlog nor gets credit
    for the time it sent nothing. An owner whose only event was taken just before its backlog
    arrived keeps its advanced tag, so that backlog still waits for the others' turns.

    Usage::

        queue = FairQueue()
        queue.put("e1")
        key = queue.get()    # blocks; None once stop() was called (one per waiting thread)
    """

    def __init__(self, group_of: Callable[[str], str] = fairness_group) -> None:
        self._group_of = group_of
        self._queues: dict[str, deque[str]] = {}
        self._tags: dict[str, int] = {}  # owners with work, or with turns ahead of the clock
        self._clock = 0
        self._stops = 0
        self._cond = threading.Condition()

    def put(self, key: str) -> None:
        group = self._group_of(key)
        with self._cond:
            self._queues.setdefault(group, deque()).append(key)
            self._tags[group] = max(self._tags.get(group, self._clock), self._clock)
            self._cond.notify()

    def stop(self, count: int) -> None:
        """Wake `count` takers with None (stopping comes before queued work)."""
        with self._cond:
            self._stops += count
            self._cond.notify_all()

    def get(self) -> str | None:
        with self._cond:
            while not self._queues and not self._stops:
                self._cond.wait()
            if self._stops:
                self._stops -= 1
                return None
            # Lowest tag first; ties go to the owner that queued first (dict order).
            group = min(self._queues, key=self._tags.__getitem__)
            keys = self._queues[group]
            key = keys.popleft()
            self._clock = self._tags[group]
            self._tags[group] += 1
            if not keys:
                del self._queues[group]
                self._forget_idle()
            return key

    def _forget_idle(self) -> None:
        # Owners with nothing queued whose tag the clock has reached carry no information.
        if len(self._tags) > len(self._queues) + 1_000:
            self._tags = {
                g: t for g, t in self._tags.items() if g in self._queues or t > self._clock
            }


class InProcessDispatcher:
    """A bounded queue and WORKER_CONCURRENCY threads, which yield to bursts of submissions
    when given a `gate` (skyhigh.processing.burst_gate).

    Usage::

        dispatcher = InProcessDispatcher(pipeline.process, concurrency=1, max_pending=1000)
        dispatcher.start(store.recover())
        if dispatcher.reserve():
            dispatcher.submit("event-1", event_type="query")
        dispatcher.stop(grace_s=30)
    """

    kind = "in-process"

    def __init__(
        self,
        process: Callable[[str], None],
        *,
        concurrency: int,
        max_pending: int,
        retries: int = 3,
        retry_after_s: float = 1.0,
        gate: BurstGate | None = None,
    ) -> None:
        self._process = process
        self._gate = gate
        self._concurrency = concurrency
        self._max_pending = max_pending
        self._retries = retries
        self._retry_after_s = retry_after_s
        self._tries: dict[str, int] = {}  # keys whose processing raised, and how often
        self._queue = FairQueue()
        self._pending = 0
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self, recovered: list[str]) -> None:
        with self._lock:
            # Recovered events count against the limit too: they are real pending work.
            self._pending += len(recovered)
        for key in recovered:
            self._queue.put(key)
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

    def submit(self, key: str, *, event_type: str) -> None:
        del event_type  # one pool runs every type
        if self._gate is not None:
            self._gate.arrived()
        self._queue.put(key)

    def pending(self) -> int:
        return self._pending

    def ping(self) -> None:
        """Threads in this process: ready while they run."""

    def stop(self, *, grace_s: float) -> list[str]:
        self._stopping.set()
        self._queue.stop(len(self._threads))
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            return sorted(self._running)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is not None and self._gate is not None:
                # Intake first during a burst (skyhigh.processing.burst_gate).
                WORKER_YIELD_SECONDS.inc(self._gate.wait(self._stopping))
            if item is None or self._stopping.is_set():
                # Queued events stay `queued` in the store; the next start recovers them.
                return
            with self._lock:
                self._running.add(item)
            again = False
            try:
                self._process(item)
            except Exception:
                log.exception("worker survived an unexpected error")
                again = self._again(item)
            finally:
                with self._lock:
                    self._running.discard(item)
                    if not again:
                        self._pending -= 1
                        self._tries.pop(item, None)
                self._update_gauge()

    def _again(self, key: str) -> bool:
        """Queue a key again after its processing raised, up to `retries` times.

        The pipeline turns a handler's own errors into `failed`; what reaches here is the
        store failing around it, e.g. a claim that waited out SQLite's busy timeout (intake
        commits back to back under a burst) or met a dropped Postgres connection. The event
        is still waiting in the store, so a later try can take it (a finished or leased one
        is a no-op); without one it waited for the next start's recovery.
        """
        with self._lock:
            tries = self._tries.get(key, 0) + 1
            if tries > self._retries:
                return False
            self._tries[key] = tries
        if self._stopping.wait(self._retry_after_s):
            return False  # stopping: the next start recovers it from the store
        self._queue.put(key)
        return True

    def _update_gauge(self) -> None:
        QUEUE_DEPTH.set(self._pending)
