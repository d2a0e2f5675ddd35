"""Group commit: new events that arrive together are stored in one transaction."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence

import anyio

from skyhigh.domain.errors import EventConflict
from skyhigh.store.events import CreateOutcome, EventStore, NewEvent

_Waiting = tuple[NewEvent, asyncio.Future[CreateOutcome]]
_STOP = None  # put on the queue by `stop`: commit what came before it, then end


class IntakeBatcher:
    """Group commit for new events: requests that arrive together share one transaction.

    Each request awaits its own outcome, so the 202 still goes out only after its event is
    durable; under load one fsync covers many events instead of each waiting for the
    SQLite write lock in turn (measured: lock waits were ~75% of intake time).

    The transactions run on one thread of their own, which takes the next batch as soon as
    the last one is committed and hands each batch's outcomes back to the loop in one call.
    (When a loop task started each batch, a batch began only once the loop got round to that
    task, behind the requests it was serving: under load the store sat idle two thirds of the
    time and a request waited ~10 ms for a ~3 ms commit.)

    Usage (on the event loop)::

        batcher = IntakeBatcher(store)
        batcher.start()
        outcome = await batcher.create(new_event)   # raises EventConflict
        await batcher.stop()
    """

    def __init__(self, store: EventStore, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="skyhigh-intake-commit", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Commit what was handed in before, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            await anyio.to_thread.run_sync(thread.join)

    async def create(self, new: NewEvent) -> CreateOutcome:
        if self._loop is None or self._thread is None:
            raise RuntimeError("IntakeBatcher.create before start() or after stop()")
        future: asyncio.Future[CreateOutcome] = self._loop.create_future()
        self._queue.put((new, future))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stopping = [first], False
            while len(batch) < self._max_batch:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is _STOP:
                    stopping = True
                    break
                batch.append(waiting)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[_Waiting]) -> None:
        assert self._loop is not None
        try:
            outcomes: Sequence[CreateOutcome | EventConflict | Exception] = self._store.create_many(
                [new for new, _ in batch]
            )
        except Exception as exc:  # the store is down: every waiting request fails
            outcomes = [exc] * len(batch)
        self._loop.call_soon_threadsafe(_settle, [future for _, future in batch], outcomes)


def _settle(
    futures: list[asyncio.Future[CreateOutcome]],
    outcomes: Sequence[CreateOutcome | EventConflict | Exception],
) -> None:
    """On the loop: each request gets its outcome (a conflict or a store error as raised)."""
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue  # the client went away
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
