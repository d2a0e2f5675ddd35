"""The Celery dispatcher: the API side of scale-out (QUEUE_URL=redis://...).

It implements the `Dispatcher` protocol without blocking the event loop:
- `submit` hands the key to a sender thread, which sends the Celery task; if the process dies
  first, or Redis loses the message, the sweeper sends it again from the store. The sender
  runs at most one round per HINT_ROUND_S and sends what queued up meanwhile as one message
  per queue (audio events one each); the worker that takes a message keeps KEYS_PER_WORKER of
  its keys and forwards the rest in messages of that size (skyhigh.worker), so building
  Celery messages, ~1 ms of Python each, costs the fleet and not the API's event loop
  (measured in BENCHMARKS.md "Intake"). Each key wakes one fair claim on the worker (the next
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
import time
from collections.abc import Sequence

from celery import Celery

from skyhigh.config import ProcessingSettings
from skyhigh.observability.metrics import QUEUE_DEPTH
from skyhigh.processing.celery_app import PROCESS_EVENTS, queue_for
from skyhigh.processing.registry import carries_audio
from skyhigh.store.events import EventStore

log = logging.getLogger("skyhigh.processing.celery_dispatch")

ADMISSION_REFRESH_S = 0.25
# Keys sent in one round at most (one message per queue); more wait for the next round.
SEND_BATCH = 256
# At most one send round per this interval: under load, the keys that arrive meanwhile share
# the next round's message; after a quiet spell the first key goes at once.
HINT_ROUND_S = 0.02
# Keys a worker runs from one message; it forwards the rest in messages of this size. Few
# enough that a busy worker holding a message does not keep many events from an idle one
# (prefetch is 1). Redelivery is safe: a finished or leased key is a no-op.
KEYS_PER_WORKER = 8
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
            send_messages(self._app, messages(batch))
        except Exception:
            # The events are durable in the store; the sweeper will send them again.
            log.warning("enqueue failed; the sweeper will retry", extra={"count": len(batch)})

    def _send_loop(self) -> None:
        next_round = 0.0
        while True:
            batch = [self._outbox.get()]
            pause = next_round - time.monotonic()
            if pause > 0 and batch[0] != _STOP:
                self._stopping.wait(pause)  # gather this round's keys; `stop` cuts it short
            next_round = time.monotonic() + HINT_ROUND_S
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
    """(queue, keys) per Celery message: one message per queue, keys in arrival order, except
    audio events, which travel one per message: a worker holding eight minute-long
    transcriptions would leave another worker idle for minutes."""
    grouped: dict[str, list[str]] = {}
    singles: list[tuple[str, list[str]]] = []
    for key, event_type in batch:
        if carries_audio(event_type):
            singles.append((queue_for(event_type), [key]))
        else:
            grouped.setdefault(queue_for(event_type), []).append(key)
    return singles + list(grouped.items())


def worker_share(keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """A worker's part of a message (the first KEYS_PER_WORKER keys) and the rest, cut into
    messages of KEYS_PER_WORKER keys for it to forward to its queue."""
    rest = keys[KEYS_PER_WORKER:]
    forwards = [rest[i : i + KEYS_PER_WORKER] for i in range(0, len(rest), KEYS_PER_WORKER)]
    return keys[:KEYS_PER_WORKER], forwards


def send_messages(app: Celery, outgoing: Sequence[tuple[str, list[str]]]) -> None:
    """Send PROCESS_EVENTS messages through one producer (one pool checkout for all)."""
    with app.producer_or_acquire() as producer:
        for queue_name, keys in outgoing:
            app.send_task(PROCESS_EVENTS, args=[keys], queue=queue_name, producer=producer)
