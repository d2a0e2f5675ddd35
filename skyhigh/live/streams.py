"""Live event streams: the in-process bus behind `WS /events/{id}/ws` and `GET .../stream`.

Two sides, so the transport can change without touching the pipeline or the routes:

- producers call `EventPublisher.publish` (skyhigh.live.publish) from any worker thread;
- routes call `StreamBroker.subscribe` on the event loop and read a `Feed`.

`StreamBus` implements both inside one process. For Celery workers the Redis-backed pair in
skyhigh.live.redis_streams implements the same protocols: `publish` appends to a per-event
Redis stream (XADD, with a TTL) and `subscribe` replays it (XRANGE) before following it
(XREAD BLOCK).

Guarantees (see `open_feed`): a subscriber first gets the event's current state, then every
message of the current attempt it has not seen yet, in publish order, and the stream ends after
the terminal status. Each subscriber has its own bounded queue; one that falls behind is cut off
(`Lagged`) rather than slowing the worker or growing memory; reconnecting is lossless because
a new subscription starts from the full state again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio

from skyhigh.domain.events import TERMINAL_STATUSES, EventRecord
from skyhigh.store.events import EventStore

DEFAULT_BUFFER = 256  # messages per subscriber; a JFK-length clip produces about 6
DEFAULT_BACKLOG = 2_000  # messages kept per running event for late subscribers
DEFAULT_TRACKED_EVENTS = 10_000  # running events with a backlog; the oldest is forgotten first


class Lagged(Exception):
    """The subscriber fell more than its buffer behind and was cut off; resubscribe."""


class StreamMessage:
    """One published message, JSON-encoded at most once for every subscriber and transport.

    Encoding waits until something reads `data` (a subscriber, the Redis stream): most events
    are never watched, and encoding each message as it was published cost intake about a tenth
    of its event-loop time per request (measured). Publishers hand over a new dict and never
    change it afterwards (skyhigh.live.publish).
    """

    __slots__ = ("_data", "_message", "status", "type")

    def __init__(
        self, type: str, status: str | None, data: str | None = None, *, message: Any = None
    ) -> None:
        self.type = type
        self.status = status
        self._data = data
        self._message = message

    @property
    def data(self) -> str:
        data = self._data
        if data is None:  # two threads may both encode: the same text, no harm
            data = self._data = json.dumps(self._message, separators=(",", ":"), default=str)
        return data

    @property
    def terminal(self) -> bool:
        return self.type == "status" and self.status in TERMINAL_STATUSES

    @classmethod
    def encode(cls, message: dict[str, Any]) -> StreamMessage:
        status = message.get("status") if message.get("type") == "status" else None
        return cls(
            type=str(message.get("type", "message")),
            status=None if status is None else str(status),
            message=message,
        )


class Feed(Protocol):
    """What a subscription yields: the backlog of the current attempt, then live messages."""

    backlog: list[StreamMessage]

    def __aiter__(self) -> AsyncIterator[StreamMessage]: ...

    async def receive(self, timeout_s: float) -> StreamMessage | None:
        """The next live message, or None after `timeout_s` of silence.

        Raises StopAsyncIteration after the terminal message, Lagged if cut off.
        """


class StreamBroker(Protocol):
    def subscribe(self, key: str) -> AbstractAsyncContextManager[Feed]:
        """Follow one event; the feed ends after its terminal status."""


class Subscription:
    """One subscriber's bounded queue, fed from worker threads through its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int) -> None:
        self.loop = loop
        self.backlog: list[StreamMessage] = []
        self._queue: asyncio.Queue[StreamMessage | None] = asyncio.Queue(buffer)
        self._lagged = False
        self._done = False

    def offer(self, message: StreamMessage) -> None:
        """Runs on the subscriber's loop; never blocks: a full queue marks the subscriber lagged."""
        if self._lagged:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._lagged = True

    def end(self) -> None:
        """Runs on the loop: no more messages will come (shutdown)."""
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._lagged = True  # the consumer is behind anyway; it resubscribes

    def __aiter__(self) -> AsyncIterator[StreamMessage]:
        return self

    async def __anext__(self) -> StreamMessage:
        if self._done:
            raise StopAsyncIteration
        return self._take(await self._queue.get())

    async def receive(self, timeout_s: float) -> StreamMessage | None:
        if self._done:
            raise StopAsyncIteration
        try:
            # The common case under load: no timer (wait_for costs a task per message).
            return self._take(self._queue.get_nowait())
        except asyncio.QueueEmpty:
            pass
        try:
            return self._take(await asyncio.wait_for(self._queue.get(), timeout_s))
        except TimeoutError:
            return None

    def _take(self, message: StreamMessage | None) -> StreamMessage:
        if self._lagged:
            raise Lagged("the subscriber fell behind; reconnect for the full state")
        if message is None:
            raise StopAsyncIteration
        self._done = message.terminal
        return message


class StreamBus:
    """In-process `EventPublisher` + `StreamBroker`.

    Usage::

        bus = StreamBus()
        pipeline = Pipeline(store, services, publisher=bus)      # worker threads publish
        async with bus.subscribe("e1") as feed:                  # a route on the event loop
            for message in feed.backlog: ...
            async for message in feed: ...
    """

    def __init__(
        self,
        *,
        buffer: int = DEFAULT_BUFFER,
        backlog: int = DEFAULT_BACKLOG,
        tracked_events: int = DEFAULT_TRACKED_EVENTS,
    ) -> None:
        self._buffer = buffer
        self._backlog_limit = backlog
        self._tracked_events = tracked_events
        self._lock = threading.Lock()
        self._backlogs: OrderedDict[str, list[StreamMessage]] = OrderedDict()
        self._subscribers: dict[str, set[Subscription]] = {}

    # --- producer side (any thread) ---

    def publish(self, key: str, message: dict[str, Any]) -> None:
        encoded = StreamMessage.encode(message)
        with self._lock:
            self._remember(key, encoded)
            if encoded.terminal:
                # Subscribers end with this message; dropping them here also frees any whose
                # route never started reading (e.g. a client that left before the response).
                subscribers = self._subscribers.pop(key, set())
            else:
                subscribers = set(self._subscribers.get(key, ()))
        self._deliver(subscribers, lambda sub: sub.offer(encoded))

    def _remember(self, key: str, message: StreamMessage) -> None:
        if message.terminal:
            # From now on the store holds the whole outcome; late subscribers read it there.
            self._backlogs.pop(key, None)
            return
        if message.type == "status" and message.status == "processing":
            # A new attempt (e.g. after a crash) starts its segments afresh.
            self._backlogs[key] = []
        backlog = self._backlogs.setdefault(key, [])
        self._backlogs.move_to_end(key)
        if len(backlog) < self._backlog_limit:
            backlog.append(message)
        while len(self._backlogs) > self._tracked_events:
            self._backlogs.popitem(last=False)

    @staticmethod
    def _deliver(subscribers: set[Subscription], action: Callable[[Subscription], None]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscription]] = {}
        for sub in subscribers:
            by_loop.setdefault(sub.loop, []).append(sub)
        for loop, subs in by_loop.items():
            # One hand-over per loop, not per subscriber: 50 subscribers cost one wake-up.
            try:
                loop.call_soon_threadsafe(_run_each, subs, action)
            except RuntimeError:
                pass  # that loop has closed (shutdown); nobody is listening there any more

    # --- consumer side (the event loop) ---

    @asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[Feed]:
        sub = Subscription(asyncio.get_running_loop(), self._buffer)
        with self._lock:
            # Registering and copying the backlog under one lock: every message is either in
            # the backlog or delivered to the queue, exactly once, in publish order.
            sub.backlog = list(self._backlogs.get(key, ()))
            self._subscribers.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._subscribers.get(key)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subscribers[key]

    def subscriber_count(self, key: str | None = None) -> int:
        with self._lock:
            if key is not None:
                return len(self._subscribers.get(key, ()))
            return sum(len(subs) for subs in self._subscribers.values())

    def close(self) -> None:
        """End every open feed (shutdown): routes finish instead of waiting for events."""
        with self._lock:
            subscribers = {sub for subs in self._subscribers.values() for sub in subs}
            self._subscribers.clear()
        self._deliver(subscribers, Subscription.end)


def _run_each(subs: list[Subscription], action: Callable[[Subscription], None]) -> None:
    for sub in subs:
        action(sub)


def state_message(record: EventRecord) -> StreamMessage:
    """The first message of every feed: the event as `GET /events/{id}` shows it."""
    return StreamMessage.encode({"type": "status", **record.model_dump(mode="json")})


@asynccontextmanager
async def open_feed(
    broker: StreamBroker, store: EventStore, key: str, *, heartbeat_s: float = 15.0
) -> AsyncIterator[AsyncIterator[StreamMessage | None]]:
    """Subscribe, then read the current state; raises EventNotFound before anything is sent.

    The iterator yields the state, the backlog and live messages, and ends after the terminal
    status. It yields None when nothing happened for `heartbeat_s` (SSE sends a comment then).
    Raises `Lagged` if the subscriber fell behind.
    """
    async with broker.subscribe(key) as feed:
        # Subscribed first, read second: nothing published in between can be missed.
        record = await anyio.to_thread.run_sync(store.get, key)
        yield _messages(record, feed, heartbeat_s)


async def _messages(
    record: EventRecord, feed: Feed, heartbeat_s: float
) -> AsyncIterator[StreamMessage | None]:
    yield state_message(record)
    if record.status in TERMINAL_STATUSES:
        return
    for message in feed.backlog:
        if message.type == "status" and message.status == record.status:
            continue  # the state message already said so
        yield message
        if message.terminal:
            return
    while True:
        try:
            live = await feed.receive(heartbeat_s)
        except StopAsyncIteration:
            return
        yield live
        if live is not None and live.terminal:
            return
