"""Await one event's segments and outcome over the live-results channel.

Only the `StreamBroker` protocol and `open_feed` are used, so this works with the in-process bus
and with the Redis-backed broker alike; nothing holds a thread while it waits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from skyhigh.domain.events import EventRecord, Segment
from skyhigh.live.streams import Lagged, StreamBroker, open_feed
from skyhigh.store.events import EventStore

log = logging.getLogger("skyhigh.api.openai_compat")


class FeedClosed(Exception):
    """The live channel closed before the event finished (the server is shutting down)."""


async def follow(
    streams: StreamBroker, store: EventStore, key: str, *, heartbeat_s: float = 15.0
) -> AsyncIterator[Segment | EventRecord | None]:
    """Each transcript segment once, as it is decoded, then the finished event, last.

    Yields None after `heartbeat_s` without news (a stream sends a keep-alive then). A
    subscriber that fell behind subscribes again: the new feed starts from the full state, and
    the segments already yielded are skipped. Raises FeedClosed if the channel ends early.
    """
    seen: set[int] = set()
    while True:
        try:
            async with open_feed(streams, store, key, heartbeat_s=heartbeat_s) as feed:
                async for message in feed:
                    if message is None:
                        yield None
                    elif message.terminal:
                        yield EventRecord.model_validate_json(message.data)
                        return
                    elif message.type == "segment":
                        segment = Segment.model_validate(json.loads(message.data)["segment"])
                        if segment.id not in seen:
                            seen.add(segment.id)
                            yield segment
        except Lagged:
            log.info("subscriber fell behind; subscribing again")
            continue
        raise FeedClosed(key)
