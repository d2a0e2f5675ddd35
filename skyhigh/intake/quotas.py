"""Per-principal quotas: requests per minute and audio minutes per hour (429 + Retry-After).

Both count in fixed windows (the current minute, the current hour) keyed by principal, so a
principal can burst up to twice its limit across a window boundary; in exchange a check is
one counter operation. Counters live in this process (`InProcessCounters`) in the embedded
mode, and in Redis (`RedisCounters`: INCRBYFLOAT + EXPIRE in one round trip) when QUEUE_URL is
set, so every API process and worker counts against the same totals.

Audio is reserved at intake and settled when the event ends. Intake reserves the duration
ffprobe reads from the spooled file (`hold_audio`), added to the window's total in the same
counter operation that checks it, so concurrent uploads cannot pass the limit together; audio
whose length is not known at intake (an `audio_url`, a file ffprobe cannot time) reserves
MAX_AUDIO_SECONDS, or the whole hour's allowance if that is less. The hold travels in the
stored payload (`audio_hold`: seconds and window); when the event ends, completed or failed,
the worker charges the duration the decoder measured (the trustworthy one: a header can lie)
and gives back the difference (`charge_audio_sync`), in the hold's window. A failure before
decoding (a lookup table that does not exist, a download refused) charges nothing; audio
past MAX_AUDIO_SECONDS is charged MAX_AUDIO_SECONDS, what was decoded. An event given up by
MAX_ATTEMPTS keeps its hold until the window ends (refusing early, never late).

A realtime session cannot be reserved up front (its length is known only when it ends), so it
is charged as it streams (`charge_streamed`, skyhigh.realtime.metering): audio it already
accepted, counted whatever the outcome, into the hour it arrived in. The event it becomes is
marked as charged: intake neither checks nor holds it, and the worker does not charge it again.

Usage::

    quotas = Quotas(InProcessCounters(), settings.intake)
    await quotas.check_request(principal.owner)       # raises QuotaExceeded
    hold = await quotas.hold_audio(owner, "speech", spooled_path, loc=("body", "file"))
    await quotas.release_audio(owner, hold)           # the event was not stored after all
    quotas.charge_audio_sync(owner, 42.0, hold.stored())  # from a worker thread, at the end
    await quotas.charge_streamed(owner, 1.0)          # a realtime session's last second
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import redis
import redis.asyncio as aioredis

from skyhigh.config import IntakeSettings
from skyhigh.domain.errors import InvalidInput, QuotaExceeded
from skyhigh.domain.events import ErrorCode
from skyhigh.domain.tenancy import owner_namespace
from skyhigh.intake.stream_slots import StreamSlots
from skyhigh.speech.decode import Decoder, probe_seconds

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


@dataclass(frozen=True)
class AudioHold:
    """Audio seconds reserved at intake in one hourly window."""

    seconds: float
    window: int

    def stored(self) -> dict[str, float]:
        return {"seconds": self.seconds, "window": self.window}

    @classmethod
    def from_stored(cls, value: object) -> AudioHold | None:
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(float(value["seconds"]), int(value["window"]))
        except (KeyError, TypeError, ValueError):
            return None


class Quotas:
    """The limits of IntakeSettings applied to counters; 0 turns a limit off."""

    def __init__(
        self,
        counters: Counters,
        settings: IntakeSettings,
        *,
        max_audio_s: float = 1800.0,
        probe_timeout_s: float = 60.0,
        decoder: Decoder = "auto",
    ) -> None:
        self._counters = counters
        self._requests_per_minute = settings.rate_limit_per_minute
        self._audio_s_per_hour = settings.audio_minutes_per_hour * 60
        # What audio of unknown length reserves (MAX_AUDIO_SECONDS in the service).
        self._unknown_audio_s = min(max_audio_s, self._audio_s_per_hour)
        self._probe_timeout_s = probe_timeout_s
        self._decoder: Decoder = decoder
        # Live streams per principal (skyhigh.intake.stream_slots), counted in this process.
        self.streams = StreamSlots(limit=settings.max_streams_per_principal)

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
            raise self._audio_used_up(used, retry_after)

    async def hold_audio(
        self, owner: str, event_type: str, audio: Path | None, *, loc: tuple[str, ...]
    ) -> AudioHold | None:
        """Reserve a speech event's audio (None: nothing to reserve); raise QuotaExceeded when
        it does not fit in what is left this hour, InvalidInput when it never could."""
        if not self.audio_limited or event_type != "speech":
            return None
        seconds = None
        if audio is not None:
            path = audio
            seconds = await anyio.to_thread.run_sync(
                lambda: probe_seconds(path, timeout_s=self._probe_timeout_s, decoder=self._decoder)
            )
        seconds = self._unknown_audio_s if seconds is None else seconds
        limit = self._audio_s_per_hour
        if seconds > limit:
            raise InvalidInput(
                ErrorCode.AUDIO_TOO_LONG,
                f"the audio is {seconds:.0f} s, more than the {limit:g} s one principal may "
                "transcribe in an hour (AUDIO_MINUTES_PER_HOUR): split it",
                loc=(*loc, "file" if audio is not None else "audio_url"),
            )
        key, retry_after = _window("audio", owner, HOUR)
        window = int(key.rsplit(":", 1)[1])
        total = await self._counters.add(key, seconds, ttl_s=2 * HOUR)
        if total > limit + 1e-6:
            await self._counters.add(key, -seconds, ttl_s=2 * HOUR)
            used = total - seconds
            raise QuotaExceeded(
                f"this audio ({seconds:.1f} s) does not fit: {used / 60:.2f} of {limit / 60:g} "
                "audio minutes are used or reserved this hour (AUDIO_MINUTES_PER_HOUR)",
                retry_after_s=retry_after,
            )
        return AudioHold(seconds, window)

    async def charge_streamed(self, owner: str, seconds: float) -> None:
        """Charge audio a realtime session has accepted, in this hour; raise QuotaExceeded when
        the charge took the hour past the limit (the seconds stay charged: they were streamed)."""
        if not self.audio_limited or seconds <= 0:
            return
        key, retry_after = _window("audio", owner, HOUR)
        used = await self._counters.add(key, seconds, ttl_s=2 * HOUR)
        if used > self._audio_s_per_hour + 1e-6:
            raise self._audio_used_up(used, retry_after)

    def _audio_used_up(self, used: float, retry_after: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"{used / 60:.2f} of {self._audio_s_per_hour / 60:g} audio minutes used this hour "
            "(AUDIO_MINUTES_PER_HOUR)",
            retry_after_s=retry_after,
        )

    async def release_audio(self, owner: str, hold: AudioHold | None) -> None:
        """Give a hold back whole: its event was not stored (a replay, a failed intake)."""
        if hold is not None:
            key = _window_key("audio", owner, hold.window)
            await self._counters.add(key, -hold.seconds, ttl_s=2 * HOUR)

    def charge_audio_sync(
        self, owner: str, seconds: float, hold: Mapping[str, float] | None = None
    ) -> None:
        """Settle an ended event (worker thread): charge the decoded `seconds`, give back its
        hold. A counter outage never fails the event."""
        reserved = AudioHold.from_stored(hold)
        if not self.audio_limited or (reserved is None and seconds <= 0):
            return
        window = _window_index(HOUR) if reserved is None else reserved.window
        change = max(0.0, seconds) - (0.0 if reserved is None else reserved.seconds)
        if change == 0:
            return
        try:
            self._counters.add_sync(_window_key("audio", owner, window), change, ttl_s=2 * HOUR)
        except Exception:
            log.warning("audio usage could not be counted", exc_info=True)


def _window(kind: str, owner: str, length_s: int) -> tuple[str, int]:
    """The counter key of the current window, and the seconds until it ends."""
    now = time.time()
    index = int(now // length_s)
    retry_after = max(1, math.ceil((index + 1) * length_s - now))
    return _window_key(kind, owner, index), retry_after


def _window_index(length_s: int) -> int:
    return int(time.time() // length_s)


def _window_key(kind: str, owner: str, index: int) -> str:
    # A digest: bounded keys whatever the JWT `sub` holds.
    digest = owner_namespace(owner)
    return f"{_KEY_PREFIX}{kind}:{digest}:{index}"
