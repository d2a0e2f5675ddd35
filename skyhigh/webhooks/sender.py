"""Signed webhooks: POST each finished event to its targets, with retries, off the worker.

Targets are `event_data.callback_url` and the `WEBHOOK_URL` setting, recorded at intake
(skyhigh.store.deliveries). When an event finishes, the pipeline's terminal status message activates
them (`Webhooks.publish`, an `EventPublisher`), and a sender thread delivers them:

- signed per Standard Webhooks (https://www.standardwebhooks.com): headers `webhook-id`,
  `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
  keyed by WEBHOOK_SECRET (`whsec_<base64>`);
- 2xx is delivered; a 4xx other than 408/429 is final (the receiver refused this message);
  anything else (other statuses, timeouts, network errors) is retried with exponential backoff
  and jitter (WEBHOOK_BACKOFF_S doubling, at most an hour, Retry-After honoured) until
  WEBHOOK_MAX_ATTEMPTS; every attempt shows in `GET /events/{id}` under `webhooks`;
- targets pass the `audio_url` SSRF guard (skyhigh.net.ssrf); WEBHOOK_ALLOW_PRIVATE opens private
  and loopback addresses for local development.

A `callback_url` on a server without WEBHOOK_SECRET is refused at intake (422
`webhooks_disabled`): an unsigned webhook would be unverifiable, and failing it later would
only surface once the event is done.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from skyhigh.config import Settings
from skyhigh.domain.events import TERMINAL_STATUSES, ErrorCode, StepFailed, WebhookDelivery
from skyhigh.net.ssrf import (
    TargetRefused,
    TargetUnreachable,
    check_literal_host,
    new_client,
    parse_target,
    post_pinned,
)
from skyhigh.store.deliveries import DELIVERED, FAILED, PENDING, Delivery, DeliveryStore, now
from skyhigh.store.events import EventStore

log = logging.getLogger("skyhigh.webhooks.sender")

WEBHOOKS_DISABLED = "webhooks_disabled"  # intake error type: callback_url without a secret
MAX_BACKOFF_S = 3600.0
SECRET_PREFIX = "whsec_"
_SENDERS = 4  # parallel attempts: one slow receiver cannot hold up the others
_RETRYABLE_4XX = frozenset({408, 429})


# --------------------------------------------------------------------------- signing


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional `whsec_` prefix."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "WEBHOOK_SECRET must be whsec_<base64>; generate one with: python -c 'import "
            'base64,secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
        ) from None
    if len(key) < 16:
        raise ValueError("WEBHOOK_SECRET is too short: use at least 16 random bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    key: bytes, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300
) -> bool:
    """Receiver side (and tests): a valid v1 signature on a recent timestamp."""
    try:
        timestamp = int(headers["webhook-timestamp"])
        expected = sign(key, headers["webhook-id"], timestamp, body)
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def webhook_body(message: Mapping[str, Any]) -> str:
    """The payload for a terminal status message: Standard Webhooks' type/timestamp/data."""
    data = {k: v for k, v in message.items() if k not in ("type", "queue_position", "webhooks")}
    envelope = {
        "type": f"event.{data['status']}",
        "timestamp": data.get("finished_at") or now().isoformat(),
        "data": data,
    }
    return json.dumps(envelope, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- policy


def configured_secret(settings: Settings) -> str | None:
    """WEBHOOK_SECRET, or None when unset or empty (`WEBHOOK_SECRET=` in a .env file)."""
    secret = settings.webhook_secret
    if secret is None:
        return None
    return secret.get_secret_value() or None


def check_settings(settings: Settings) -> None:
    """Refuse to start with a WEBHOOK_URL that could never be delivered or verified."""
    secret = configured_secret(settings)
    if secret is not None:
        signing_key(secret)
    if settings.webhook_url:
        if secret is None:
            raise ValueError("WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are signed")
        try:
            check_literal_host(
                parse_target(settings.webhook_url), allow_private=settings.webhook_allow_private
            )
        except TargetRefused as exc:
            raise ValueError(f"WEBHOOK_URL: {exc}") from None


def check_callback_url(value: object, settings: Settings) -> str:
    """Intake check of `event_data.callback_url` (no DNS); raises StepFailed."""
    if configured_secret(settings) is None:
        raise StepFailed(
            WEBHOOKS_DISABLED,
            "callback_url needs webhook signing, which is off on this server (WEBHOOK_SECRET)",
        )
    if not isinstance(value, str) or not 0 < len(value) <= 2048:
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, "callback_url must be a URL of 1-2048 chars")
    try:
        check_literal_host(parse_target(value), allow_private=settings.webhook_allow_private)
    except TargetRefused as exc:
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, f"callback_url: {exc}") from None
    return value


def backoff_s(attempts: int, *, base_s: float, retry_after: str | None = None) -> float:
    """Delay before the next attempt, after `attempts` failed ones: exponential, jittered."""
    ceiling = min(MAX_BACKOFF_S, base_s * 2 ** (attempts - 1))
    # "Equal jitter": at least half the step, so retries spread out but never bunch at zero.
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    asked = _retry_after_s(retry_after) or 0.0
    return float(min(MAX_BACKOFF_S, max(delay, asked)))


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def redact_url(url: str) -> str:
    """Scheme, host and path only: a query string may hold the receiver's own token."""
    try:
        parsed = parse_target(url)
    except TargetRefused:
        return "(invalid URL)"
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


# --------------------------------------------------------------------------- the service


class Webhooks:
    """Schedules, activates and delivers webhooks; an `EventPublisher` for the pipeline.

    Usage::

        webhooks = Webhooks(settings, store)
        webhooks.start()                               # resumes pending deliveries
        webhooks.schedule("e1", callback_url=None)     # at intake (WEBHOOK_URL applies)
        pipeline = Pipeline(store, services, publisher=FanOut([bus, webhooks]))
        webhooks.stop()
    """

    def __init__(self, settings: Settings, store: EventStore) -> None:
        check_settings(settings)
        self.settings = settings
        self.store = store
        self.deliveries = DeliveryStore(store.engine)
        secret = configured_secret(settings)
        self._key = signing_key(secret) if secret is not None else None
        self._client = new_client()
        self._pool = ThreadPoolExecutor(_SENDERS, thread_name_prefix="skyhigh-webhook")
        self._slots = threading.Semaphore(_SENDERS)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # An attempt (DNS, connect, write, read: each up to the timeout) must end before its
        # lease does, or another process could send it too.
        self._lease_s = settings.webhook_timeout_s * 4 + 10

    @property
    def enabled(self) -> bool:
        return self._key is not None

    # --- intake and the pipeline (quick; never deliver on the caller's thread) ---

    def targets(self, callback_url: str | None) -> list[str]:
        urls = [url for url in (callback_url, self.settings.webhook_url) if url]
        return list(dict.fromkeys(urls))

    def schedule(self, event_id: str, callback_url: str | None) -> None:
        """Record where this event's outcome goes; called at intake, before the 202."""
        urls = self.targets(callback_url)
        if urls and self.deliveries.schedule(event_id, urls):
            self._activate_from_store(event_id)

    def publish(self, event_id: str, message: dict[str, Any]) -> None:
        """EventPublisher: a terminal status makes the event's deliveries due."""
        if message.get("type") != "status" or message.get("status") not in TERMINAL_STATUSES:
            return
        if not self.enabled:
            return
        if self.deliveries.activate(event_id, webhook_body(message)):
            self._wake.set()

    def for_event(self, event_id: str) -> list[WebhookDelivery]:
        """The event's deliveries for `GET /events/{id}` (target URLs redacted)."""
        deliveries = self.deliveries.for_event(event_id) if self.enabled else []
        return [
            WebhookDelivery.model_validate({**delivery, "url": redact_url(delivery["url"])})
            for delivery in deliveries
        ]

    def _activate_from_store(self, event_id: str) -> None:
        record = self.store.get(event_id)
        body = webhook_body({"type": "status", **record.model_dump(mode="json")})
        if self.deliveries.activate(event_id, body):
            self._wake.set()

    # --- the sender ---

    def start(self) -> None:
        if not self.enabled:
            return
        for event_id in self.deliveries.finished_but_scheduled():
            self._activate_from_store(event_id)
        self._thread = threading.Thread(target=self._run, name="skyhigh-webhooks", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop claiming; attempts in flight get `timeout_s`, the rest resume at next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._dispatch_due()
                wait_s = self._idle_wait_s()
            except Exception:
                log.exception("webhook scheduler error; retrying")
                wait_s = 1.0
            self._wake.wait(wait_s)
            self._wake.clear()

    def _dispatch_due(self) -> None:
        while not self._stopping.is_set():
            free = 0
            while self._slots.acquire(blocking=False):
                free += 1
            if free == 0:
                self._slots.acquire()  # all senders busy: wait for one
                free = 1
            claimed = self.deliveries.claim_due(lease_s=self._lease_s, limit=free)
            for _ in range(free - len(claimed)):
                self._slots.release()
            for delivery in claimed:
                self._pool.submit(self._deliver, delivery)
            if len(claimed) < free:
                return

    def _idle_wait_s(self) -> float:
        due = self.deliveries.next_due()
        if due is None:
            return 5.0  # also picks up rows another process scheduled
        return min(5.0, max(0.0, (due - now()).total_seconds()))

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self._attempt(delivery)
        except Exception:
            log.exception("webhook attempt crashed", extra={"event_id": delivery.event_id})
        finally:
            self._slots.release()
            self._wake.set()  # a slot is free; more may be due

    def _attempt(self, delivery: Delivery) -> None:
        assert self._key is not None
        attempt_no = delivery.attempts + 1
        started_at = now()
        started = time.perf_counter()
        timestamp = int(time.time())
        body = delivery.body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "SkyHigh-Webhooks/1",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, delivery.id, timestamp, body),
        }
        status_code: int | None = None
        error: str | None = None
        retry_after: str | None = None
        final = False
        try:
            answer = post_pinned(
                self._client,
                delivery.url,
                content=body,
                headers=headers,
                allow_private=self.settings.webhook_allow_private,
                timeout_s=self.settings.webhook_timeout_s,
            )
            status_code, retry_after = answer.status_code, answer.retry_after
            if not 200 <= status_code < 300:
                error = f"answered {status_code}"
                final = 400 <= status_code < 500 and status_code not in _RETRYABLE_4XX
        except TargetRefused as exc:
            error, final = f"refused: {exc}", True
            if "metadata" not in error:
                error += " (WEBHOOK_ALLOW_PRIVATE=true allows internal targets)"
        except TargetUnreachable as exc:
            error = str(exc)
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        attempt = {
            "attempt": attempt_no,
            "at": started_at.isoformat(),
            "status_code": status_code,
            "error": error,
            "duration_ms": duration_ms,
        }
        if error is None:
            outcome, retry_at = DELIVERED, None
        elif final or attempt_no >= self.settings.webhook_max_attempts:
            outcome, retry_at = FAILED, None
        else:
            delay = backoff_s(
                attempt_no, base_s=self.settings.webhook_backoff_s, retry_after=retry_after
            )
            outcome, retry_at = PENDING, now() + timedelta(seconds=delay)
        self.deliveries.record(delivery.id, attempt, outcome=outcome, retry_at=retry_at)
        log.info(
            "webhook attempt",
            extra={
                "event_id": delivery.event_id,
                "attempt": attempt_no,
                "status": outcome,
                "status_code": status_code,
                "duration_s": duration_ms / 1000,
            },
        )
