"""Signed webhooks: POST each finished event to its targets, with retries, off the worker.

Targets are `event_data.callback_url` and the `WEBHOOK_URL` setting, recorded at intake
(skyhigh.store.deliveries). When an event finishes, the pipeline's terminal status message activates
them (`Webhooks.publish`, an `EventPublisher`), and a sender thread delivers them:

- signed per Standard Webhooks with WEBHOOK_SECRET (`whsec_<base64>`; skyhigh.webhooks.signing);
- 2xx is delivered; a 4xx other than 408/429 is final (the receiver refused this message);
  anything else (other statuses, timeouts, network errors) is retried with exponential backoff
  and jitter (WEBHOOK_BACKOFF_S doubling, at most an hour, Retry-After honoured) until
  WEBHOOK_MAX_ATTEMPTS; every attempt shows in `GET /events/{id}` under `webhooks`;
- targets pass the `audio_url` SSRF guard (skyhigh.net); WEBHOOK_ALLOW_PRIVATE opens private
  and loopback addresses for local development.

A `callback_url` on a server without WEBHOOK_SECRET is refused at intake (422
`webhooks_disabled`): an unsigned webhook would be unverifiable, and failing it later would
only surface once the event is done.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from skyhigh.config import WebhookSettings
from skyhigh.domain.events import TERMINAL_STATUSES, ErrorCode, StepFailed, WebhookDelivery
from skyhigh.net.errors import TargetRefused, TargetUnreachable
from skyhigh.net.pinned import new_client, post_pinned
from skyhigh.net.policy import check_literal_host
from skyhigh.net.redact import redact_url
from skyhigh.store.db import now
from skyhigh.store.deliveries import DELIVERED, FAILED, PENDING, Delivery, DeliveryStore
from skyhigh.store.events import EventStore
from skyhigh.webhooks.signing import Signer, signing_key

log = logging.getLogger("skyhigh.webhooks.sender")

WEBHOOKS_DISABLED = "webhooks_disabled"  # intake error type: callback_url without a secret
MAX_BACKOFF_S = 3600.0
_SENDERS = 4  # parallel attempts: one slow receiver cannot hold up the others
_RETRYABLE_4XX = frozenset({408, 429})


# --------------------------------------------------------------------------- payload


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


def configured_secret(settings: WebhookSettings) -> str | None:
    """WEBHOOK_SECRET, or None when unset or empty (`WEBHOOK_SECRET=` in a .env file)."""
    secret = settings.webhook_secret
    if secret is None:
        return None
    return secret.get_secret_value() or None


def check_settings(settings: WebhookSettings) -> None:
    """Refuse to start with a WEBHOOK_URL that could never be delivered or verified."""
    secret = configured_secret(settings)
    if secret is not None:
        signing_key(secret)
    if settings.webhook_url:
        if secret is None:
            raise ValueError("WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are signed")
        try:
            check_literal_host(settings.webhook_url, allow_private=settings.webhook_allow_private)
        except TargetRefused as exc:
            raise ValueError(f"WEBHOOK_URL: {exc}") from None


def check_callback_url(value: object, settings: WebhookSettings) -> str:
    """Intake check of `event_data.callback_url` (no DNS); raises StepFailed."""
    if configured_secret(settings) is None:
        raise StepFailed(
            WEBHOOKS_DISABLED,
            "callback_url needs webhook signing, which is off on this server (WEBHOOK_SECRET)",
        )
    if not isinstance(value, str) or not 0 < len(value) <= 2048:
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, "callback_url must be a URL of 1-2048 chars")
    try:
        check_literal_host(value, allow_private=settings.webhook_allow_private)
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

    def __init__(self, settings: WebhookSettings, store: EventStore) -> None:
        check_settings(settings)
        self.settings = settings
        self.store = store
        self.deliveries = DeliveryStore(store.engine)
        secret = configured_secret(settings)
        self._signer = Signer(secret) if secret is not None else None
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
        return self._signer is not None

    # --- intake and the pipeline (quick; never deliver on the caller's thread) ---

    def targets(self, callback_url: str | None) -> list[str]:
        urls = [url for url in (callback_url, self.settings.webhook_url) if url]
        return list(dict.fromkeys(urls))

    def schedule(self, key: str, callback_url: str | None) -> None:
        """Record where this event's outcome goes; called at intake, before the 202."""
        urls = self.targets(callback_url)
        if urls and self.deliveries.schedule(key, urls):
            self._activate_from_store(key)

    def publish(self, key: str, message: dict[str, Any]) -> None:
        """EventPublisher: a terminal status makes the event's deliveries due."""
        if message.get("type") != "status" or message.get("status") not in TERMINAL_STATUSES:
            return
        if not self.enabled:
            return
        if self.deliveries.activate(key, webhook_body(message)):
            self._wake.set()

    def for_event(self, key: str) -> list[WebhookDelivery]:
        """The event's deliveries for `GET /events/{id}` (target URLs redacted)."""
        deliveries = self.deliveries.for_event(key) if self.enabled else []
        return [
            WebhookDelivery.model_validate({**delivery, "url": redact_url(delivery["url"])})
            for delivery in deliveries
        ]

    def _activate_from_store(self, key: str) -> None:
        record = self.store.get(key)
        body = webhook_body({"type": "status", **record.model_dump(mode="json")})
        if self.deliveries.activate(key, body):
            self._wake.set()

    # --- the sender ---

    def start(self) -> None:
        if not self.enabled:
            return
        for key in self.deliveries.finished_but_scheduled():
            self._activate_from_store(key)
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
            log.exception("webhook attempt crashed", extra={"event_id": delivery.key})
        finally:
            self._slots.release()
            self._wake.set()  # a slot is free; more may be due

    def _next_step(
        self, attempt_no: int, error: str | None, *, final: bool, retry_after: str | None
    ) -> tuple[str, datetime | None]:
        """Delivered, failed for good, or pending with the time of the next attempt."""
        if error is None:
            return DELIVERED, None
        if final or attempt_no >= self.settings.webhook_max_attempts:
            return FAILED, None
        delay = backoff_s(
            attempt_no, base_s=self.settings.webhook_backoff_s, retry_after=retry_after
        )
        return PENDING, now() + timedelta(seconds=delay)

    def _attempt(self, delivery: Delivery) -> None:
        assert self._signer is not None
        attempt_no = delivery.attempts + 1
        started_at = now()
        started = time.perf_counter()
        headers = {
            "content-type": "application/json",
            "user-agent": "SkyHigh-Webhooks/1",
            # Signed afresh per attempt: receivers reject stale timestamps.
            **self._signer.headers(delivery.id, delivery.body),
        }
        status_code: int | None = None
        error: str | None = None
        retry_after: str | None = None
        final = False
        try:
            answer = post_pinned(
                self._client,
                delivery.url,
                content=delivery.body.encode(),
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
            if exc.allow_private_helps:
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
        outcome, retry_at = self._next_step(attempt_no, error, final=final, retry_after=retry_after)
        self.deliveries.record(delivery.id, attempt, outcome=outcome, retry_at=retry_at)
        log.info(
            "webhook attempt",
            extra={
                "event_id": delivery.key,
                "attempt": attempt_no,
                "status": outcome,
                "status_code": status_code,
                "duration_s": duration_ms / 1000,
            },
        )
