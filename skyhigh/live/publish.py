"""Where the pipeline announces progress: status changes, transcript segments, results.

The pipeline only knows the `EventPublisher` protocol. In one process the stream bus
(WebSocket/SSE subscribers) and the webhook sender implement it; across processes the
Redis-backed publisher (skyhigh.live.redis_streams) does, with no change to the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger("skyhigh.live.publish")


class EventPublisher(Protocol):
    def publish(self, key: str, message: dict[str, Any]) -> None:
        """Announce `message` for `key`; must be quick and never raise into the caller.

        `message` is the caller's new dict, never changed afterwards: it may be encoded later.

        Messages have a `type`: "status" (with `status`, and `result` or `error` once
        terminal), "segment" (with `segment`), "transcript", "matches".
        """


class FanOut:
    """Publishes every message to several publishers; one failing never affects the others."""

    def __init__(self, publishers: Sequence[EventPublisher] = ()) -> None:
        self.publishers = list(publishers)

    def publish(self, key: str, message: dict[str, Any]) -> None:
        for publisher in self.publishers:
            try:
                publisher.publish(key, message)
            except Exception:
                log.exception("publisher failed", extra={"event_type": message.get("type")})
