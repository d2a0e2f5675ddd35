"""Live results across processes: one bounded Redis Stream per event.

Workers publish with `RedisPublisher` (XADD, MAXLEN ~ LIVE_STREAM_MAXLEN, the key expiring
LIVE_STREAM_TTL_S after its last message); the API's WS/SSE routes subscribe with
`RedisStreamBroker`, which gives the same guarantees as the in-process bus (skyhigh.live.streams):
the backlog of the current attempt (everything since its last `processing` status), then live
messages in publish order, ending after the terminal status. Redis keeps the messages, so a
slow subscriber is never cut off; it just reads further behind.

Redis is a hint carrier here as everywhere: if it loses a stream, subscribers still start from
the event's state in the store, and the outcome is in the store too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis

from skyhigh.live.streams import Feed, StreamMessage

log = logging.getLogger("skyhigh.live.redis_streams")

KEY_PREFIX = "skyhigh:live:"


def stream_key(key: str) -> str:
    return KEY_PREFIX + key


def _fields(message: StreamMessage) -> dict[str, str]:
    return {"type": message.type, "status": message.status or "", "data": message.data}


def _message(fields: dict[bytes, bytes]) -> StreamMessage:
    status = fields.get(b"status", b"").decode()
    return StreamMessage(
        type=fields[b"type"].decode(), status=status or None, data=fields[b"data"].decode()
    )


class RedisPublisher:
    """`EventPublisher` for worker processes: appends to the event's stream; never raises."""

    def __init__(self, client: redis.Redis, *, maxlen: int, ttl_s: int) -> None:
        self._client = client
        self._maxlen = maxlen
        self._ttl_s = ttl_s

    def publish(self, key: str, message: dict[str, Any]) -> None:
        encoded = StreamMessage.encode(message)
        name = stream_key(key)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.xadd(name, _fields(encoded), maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.expire(name, self._ttl_s)
            pipe.execute()
        except redis.RedisError:
            # Live messages are best effort; the store has the outcome.
            log.warning("live message not published", extra={"event_type": encoded.type})


class _RedisFeed:
    def __init__(self, client: aioredis.Redis, key: str, closing: asyncio.Event) -> None:
        self._client = client
        self._key = key
        self._closing = closing
        self._last_id = "0-0"
        self._done = False
        self.backlog: list[StreamMessage] = []

    async def load_backlog(self) -> None:
        entries: Any = await self._client.xrange(self._key)
        messages: list[StreamMessage] = []
        for entry_id, fields in entries:
            self._last_id = entry_id.decode()
            message = _message(fields)
            if message.type == "status" and message.status == "processing":
                messages = []  # a new attempt starts its messages afresh
            messages.append(message)
        self.backlog = messages

    def __aiter__(self) -> AsyncIterator[StreamMessage]:
        return self

    async def __anext__(self) -> StreamMessage:
        while True:
            message = await self.receive(30.0)
            if message is not None:
                return message

    async def receive(self, timeout_s: float) -> StreamMessage | None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._done or self._closing.is_set():
                raise StopAsyncIteration
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Short blocking reads, so a server shutting down ends its streams within a second.
            answer: Any = await self._client.xread(
                {self._key: self._last_id}, count=1, block=max(1, int(min(left, 1.0) * 1000))
            )
            if answer:
                break
        entry_id, fields = answer[0][1][0]
        self._last_id = entry_id.decode()
        message = _message(fields)
        self._done = message.terminal
        return message


class RedisStreamBroker:
    """`StreamBroker` for API processes whose events run in other processes."""

    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url)
        self._closing = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[Feed]:
        feed = _RedisFeed(self._client, stream_key(key), self._closing)
        # The backlog is read at subscription; what comes after is read after its last id,
        # so nothing published in between is missed or repeated.
        await feed.load_backlog()
        yield feed

    async def aclose(self) -> None:
        """End every open feed (shutdown), then drop the connections."""
        self._closing.set()
        await self._client.aclose()
