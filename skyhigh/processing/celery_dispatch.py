"""The Celery dispatcher: the API side of scale-out (QUEUE_URL=redis://...).

It implements the `Dispatcher` protocol without blocking the event loop:
- `submit` hands the key to a sender thread, which sends the Celery task; if the process dies
  first, or Redis loses the message, the sweeper sends it again from the store. The sender
  sends whatever has queued up meanwhile through one producer (one pool checkout and one
  declared queue per batch, not per event), up to IDS_PER_MESSAGE keys in one message
  (measured in BENCHMARKS.md "Intake"); each key wakes one fair claim on the worker (the next
  event of the owner served least recently, skyhigh.store.event_leases.claim_next), so the
  order of messages in Redis does not decide whose event runs next;
- `reserve` admits against the number of unfinished events of the whole fleet, read from the
  store by a background thread every ADMISSION_REFRESH_S (plus this process's reservations
  since), so MAX_PENDING_EVENTS holds across API processes without a query per request;
- the sweeper (every SWEEP_INTERVAL_S) re-sends hints for events the store says are waiting
  too long or were abandoned by a dead worker (expired lease): duplicates are no-ops.
"""

from __future__ import annotations

import logging
import queue
import threading

from celery import Celery

from skyhigh.config import ProcessingSettings
from skyhigh.observability.metrics import QUEUE_DEPTH
from skyhigh.processing.celery_app import PROCESS_EVENTS, queue_for
from skyhigh.processing.registry import carries_audio
from skyhigh.store.events import EventStore

log = logging.getLogger("skyhigh.processing.celery_dispatch")

ADMISSION_REFRESH_S = 0.25
# Hints sent through one producer checkout at most; more wait for the next batch.
SEND_BATCH = 256
# Keys per Celery message. One message costs about as much to send as to receive, so several
# keys share it; few enough that a busy worker holding a message does not keep many events from
# an idle one (prefetch is 1). Redelivery is safe: a finished or leased key is a no-op.
IDS_PER_MESSAGE = 8
_STOP = ("", "")


class CeleryDispatcher:
    """Usage::

    dispatcher = CeleryDispatcher(make_celery(settings.processing), store,
                                  settings.processing, max_pending=1000)
    dispatcher.start([])
    if dispatcher.reserve():
        dispatcher.submit("e1", event_type="query")
    dispatcher.stop(grace_s=5)
    """

    kind = "celery"

    def __init__(
        self, app: Celery, store: EventStore, settings: ProcessingSettings, *, max_pending: int
    ) -> None:
        self._app = app
        self._store = store
        self._settings = settings
        self._max_pending = max_pending
        self._outbox: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._active = 0  # unfinished events in the store, as last counted
        self._reserved = 0  # this process's admissions since that count
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, recovered: list[str]) -> None:
        del recovered  # the sweeper finds what a crash left behind, in every process
        self._refresh()
        for target, name in (
            (self._send_loop, "skyhigh-celery-sender"),
            (self._admission_loop, "skyhigh-admission"),
            (self._sweep_loop, "skyhigh-sweeper"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def reserve(self) -> bool:
        with self._lock:
            if self._stopping.is_set() or self._active + self._reserved >= self._max_pending:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def submit(self, key: str, *, event_type: str) -> None:
        self._outbox.put((key, event_type))

    def pending(self) -> int:
        with self._lock:
            return self._active + self._reserved

    def stop(self, *, grace_s: float) -> list[str]:
        self._stopping.set()
        self._outbox.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=grace_s)
        return []  # nothing runs in this process

    def ping(self) -> None:
        """Raises when the broker is unreachable (readiness)."""
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    # --- background threads ---

    def _send(self, batch: list[tuple[str, str]]) -> None:
        try:
            with self._app.producer_or_acquire() as producer:
                for queue_name, keys in messages(batch):
                    self._app.send_task(
                        PROCESS_EVENTS, args=[keys], queue=queue_name, producer=producer
                    )
        except Exception:
            # The events are durable in the store; the sweeper will send them again.
            log.warning("enqueue failed; the sweeper will retry", extra={"count": len(batch)})

    def _send_loop(self) -> None:
        while True:
            batch = [self._outbox.get()]
            while len(batch) < SEND_BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            if stop:
                batch = batch[: batch.index(_STOP)]
            if batch:
                self._send(batch)
            if stop:
                return

    def _refresh(self) -> None:
        try:
            active = self._store.count_active()
        except Exception:
            log.warning("could not count pending events")
            return
        with self._lock:
            self._active = active
            self._reserved = 0
        QUEUE_DEPTH.set(active)

    def _admission_loop(self) -> None:
        while not self._stopping.wait(ADMISSION_REFRESH_S):
            self._refresh()

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self._settings.sweep_interval_s):
            try:
                stale = self._store.stale(requeue_after_s=self._settings.requeue_after_s)
            except Exception:
                log.warning("sweep failed")
                continue
            for start in range(0, len(stale), SEND_BATCH):
                self._send(stale[start : start + SEND_BATCH])
            if stale:
                log.info("re-sent waiting events", extra={"count": len(stale)})


def messages(batch: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(queue, keys) per Celery message: keys grouped by queue in arrival order, at most
    IDS_PER_MESSAGE in each. Audio events travel one per message: a worker holding eight
    minute-long transcriptions would leave another worker idle for minutes."""
    grouped: dict[str, list[str]] = {}
    singles: list[tuple[str, list[str]]] = []
    for key, event_type in batch:
        if carries_audio(event_type):
            singles.append((queue_for(event_type), [key]))
        else:
            grouped.setdefault(queue_for(event_type), []).append(key)
    return singles + [
        (queue_name, keys[start : start + IDS_PER_MESSAGE])
        for queue_name, keys in grouped.items()
        for start in range(0, len(keys), IDS_PER_MESSAGE)
    ]
