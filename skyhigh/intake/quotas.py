"""Per-principal quotas: requests per minute and audio minutes per hour (429 + Retry-After).

Both count in fixed windows (the current minute, the current hour) keyed by principal, so a
principal can burst up to twice its limit across a window boundary; in exchange a check is
one counter operation. Counters live in this process (`InProcessCounters`) in the embedded
mode, and in Redis (`RedisCounters`: INCRBYFLOAT + EXPIRE in one round trip) when QUEUE_URL is
set, so every API process and worker counts against the same totals.

Audio is charged when a speech event completes, with the duration the decoder measured (the
only trustworthy one: a file's size says little about its length), and checked at intake: a
principal over its hourly minutes gets 429 for new speech until the window ends, so it can
exceed the limit by at most the events it already has in flight.

Usage::

    quotas = Quotas(InProcessCounters(), settings.intake)
    await quotas.check_request(principal.owner)       # raises QuotaExceeded
    await quotas.check_audio(principal.owner)
    quotas.charge_audio_sync(principal.owner, 42.0)   # from a worker thread
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from typing import Protocol

import redis
import redis.asyncio as aioredis

from skyhigh.config import IntakeSettings
from skyhigh.domain.errors import QuotaExceeded

MINUTE = 60
HOUR = 3600
_KEY_PREFIX = "skyhigh:quota:"

log = logging.getLogger("skyhigh.intake.quotas")


class Counters(Protocol):
    """Fixed-window counters; `add` returns the window's new total."""

    async def add(self, key: str, amount: float, *, ttl_s: int) -> float: ...

    def add_sync(self, key: str, amount: float, *, ttl_s: int) -> float: ...


class InProcessCounters:
    """Counters in this process's memory; expired windows are dropped as new ones start."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # key -> (total, expires at)
        self._lock = threading.Lock()  # workers charge from their threads

    async def add(self, key: str, amount: float, *, ttl_s: int) -> float:
        return self.add_sync(key, amount, ttl_s=ttl_s)  # microseconds: fine on the loop

    def add_sync(self, key: str, amount: float, *, ttl_s: int) -> float:
        now = time.monotonic()
        with self._lock:
            total, expires = self._values.get(key, (0.0, now + ttl_s))
            if expires <= now:
                total, expires = 0.0, now + ttl_s
            total += amount
            self._values[key] = (total, expires)
            if len(self._values) > 100_000:  # many principals: forget finished windows
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
            return total


class RedisCounters:
    """Counters in Redis, shared by every process; the API side never blocks its loop."""

    def __init__(self, url: str) -> None:
        self._async = aioredis.Redis.from_url(url)
        self._sync: redis.Redis | None = None
        self._url = url

    async def add(self, key: str, amount: float, *, ttl_s: int) -> float:
        async with self._async.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(key, amount)
            pipe.expire(key, ttl_s)
            total, _ = await pipe.execute()
        return float(total)

    def add_sync(self, key: str, amount: float, *, ttl_s: int) -> float:
        if self._sync is None:
            self._sync = redis.Redis.from_url(self._url)
        with self._sync.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(key, amount)
            pipe.expire(key, ttl_s)
            total, _ = pipe.execute()
        return float(total)


class Quotas:
    """The limits of IntakeSettings applied to counters; 0 turns a limit off."""

    def __init__(self, counters: Counters, settings: IntakeSettings) -> None:
        self._counters = counters
        self._requests_per_minute = settings.rate_limit_per_minute
        self._audio_s_per_hour = settings.audio_minutes_per_hour * 60

    @property
    def audio_limited(self) -> bool:
        return self._audio_s_per_hour > 0

    async def check_request(self, owner: str) -> None:
        """Count one request; raise QuotaExceeded past REQUESTS_PER_MINUTE."""
        if self._requests_per_minute <= 0:
            return
        key, retry_after = _window("requests", owner, MINUTE)
        count = await self._counters.add(key, 1, ttl_s=2 * MINUTE)
        if count > self._requests_per_minute:
            raise QuotaExceeded(
                f"more than {self._requests_per_minute} requests this minute "
                "(RATE_LIMIT_PER_MINUTE)",
                retry_after_s=retry_after,
            )

    async def check_audio(self, owner: str) -> None:
        """Raise QuotaExceeded when this hour's audio is used up (nothing is charged here)."""
        if not self.audio_limited:
            return
        key, retry_after = _window("audio", owner, HOUR)
        used = await self._counters.add(key, 0, ttl_s=2 * HOUR)
        if used >= self._audio_s_per_hour:
            raise QuotaExceeded(
                f"{used / 60:.1f} of {self._audio_s_per_hour / 60:g} audio minutes used this "
                "hour (AUDIO_MINUTES_PER_HOUR)",
                retry_after_s=retry_after,
            )

    def charge_audio_sync(self, owner: str, seconds: float) -> None:
        """Count transcribed audio (worker thread); a counter outage never fails the event."""
        if not self.audio_limited or seconds <= 0:
            return
        key, _ = _window("audio", owner, HOUR)
        try:
            self._counters.add_sync(key, seconds, ttl_s=2 * HOUR)
        except Exception:
            log.warning("audio usage could not be counted", exc_info=True)


def _window(kind: str, owner: str, length_s: int) -> tuple[str, int]:
    """The counter key of the current window, and the seconds until it ends."""
    now = time.time()
    index = int(now // length_s)
    # A digest: bounded keys whatever the JWT `sub` holds.
    digest = hashlib.sha256(owner.encode()).hexdigest()[:32]
    retry_after = max(1, math.ceil((index + 1) * length_s - now))
    return f"{_KEY_PREFIX}{kind}:{digest}:{index}", retry_after
