"""Signed webhooks: a real receiver on 127.0.0.1, a real server, retries, a restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.store.events import EventStore, NewEvent
from skyhigh.webhooks.sender import Webhooks, backoff_s, check_callback_url, check_settings
from skyhigh.webhooks.signing import Signer, signing_key
from tests.support.crash import HOOK_EVENT, HOOK_PATH, Crash
from tests.support.receivers import WEBHOOK_KEY, WEBHOOK_SECRET, Received, WebhookReceiver
from tests.support.server import ServerProcess
from tests.support.settings import TOKENS, make_settings

AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}


def post(server: ServerProcess, event_id: str, **data: Any) -> httpx.Response:
    event = {"event_id": event_id, "event_type": "query", "event_data": {"text": "pets", **data}}
    return httpx.post(f"{server.url}/events/", headers=AUTH, json=event, timeout=30)


def deliveries(server: ServerProcess, event_id: str) -> list[dict[str, Any]]:
    record = httpx.get(f"{server.url}/events/{event_id}", headers=AUTH, timeout=30).json()
    return list(record.get("webhooks") or [])


def wait_deliveries(
    server: ServerProcess, event_id: str, done: set[str], timeout_s: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = deliveries(server, event_id)
        if found and all(d["status"] in done for d in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def spec_signature(headers: Mapping[str, str], body: bytes) -> str:
    """The v1 signature per the Standard Webhooks spec, written out here rather than trusting
    either our code or the package it uses."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(WEBHOOK_KEY, signed, hashlib.sha256).digest()).decode()


def assert_signed(received: Received) -> None:
    """Verify as a receiver would: with the standardwebhooks package, and by the spec."""
    Webhook(WEBHOOK_SECRET).verify(received.body, received.headers)  # raises when it fails
    assert received.headers["webhook-signature"] == spec_signature(received.headers, received.body)
    assert abs(time.time() - int(received.headers["webhook-timestamp"])) < 120
    assert received.headers["content-type"] == "application/json"


def test_our_signatures_verify_with_standardwebhooks_and_theirs_match_ours() -> None:
    body = '{"type":"event.completed","data":{"text":"Zürich"}}'  # signed as UTF-8 bytes
    receiver = Webhook(WEBHOOK_SECRET)
    for at in (None, datetime.now(timezone(timedelta(hours=-7)))):  # any zone signs the instant
        headers = Signer(WEBHOOK_SECRET).headers("msg_1", body, at=at)
        assert receiver.verify(body.encode(), headers) == {
            "type": "event.completed",
            "data": {"text": "Zürich"},
        }
        assert headers["webhook-signature"] == spec_signature(headers, body.encode())
        # The other way round: what the package signs for this message is what we sent.
        sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
        assert receiver.sign("msg_1", sent_at, body) == headers["webhook-signature"]
        with pytest.raises(WebhookVerificationError):
            receiver.verify(body.encode() + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another-key-of-enough-bytes").decode()).verify(body, headers)


def test_webhook_secrets_are_validated() -> None:
    assert signing_key(WEBHOOK_SECRET) == WEBHOOK_KEY
    assert signing_key(WEBHOOK_SECRET.removeprefix("whsec_")) == WEBHOOK_KEY
    with pytest.raises(ValueError, match=r"whsec_<base64>"):
        signing_key("whsec_not base64!")
    with pytest.raises(ValueError, match="at least 16"):
        Signer("whsec_" + base64.b64encode(bytes(15)).decode())


@pytest.mark.slow
def test_the_outcome_is_posted_signed_to_the_callback_and_webhook_url(
    live_server: ServerProcess, webhook_receiver: WebhookReceiver
) -> None:
    path = "/answer/200/signed"
    assert post(live_server, "hook-ok", callback_url=webhook_receiver.url + path).status_code == 202
    failing = post(live_server, "hook-failed", table="missing", callback_url=webhook_receiver.url)
    assert failing.status_code == 202

    (delivery,) = webhook_receiver.wait_for(path, 1)
    assert_signed(delivery)
    payload = delivery.json()
    assert payload["type"] == "event.completed"
    assert payload["data"]["event_id"] == "hook-ok" and payload["data"]["result"]["matches"]
    assert payload["timestamp"] == payload["data"]["finished_at"]

    found = wait_deliveries(live_server, "hook-ok", {"delivered"})
    assert {d["url"] for d in found} == {
        webhook_receiver.url + path,
        webhook_receiver.url + "/global",  # WEBHOOK_URL: every event's outcome
    }
    assert all(d["attempts"] == 1 and d["history"][0]["status_code"] == 200 for d in found)
    (global_copy,) = webhook_receiver.for_event("hook-ok", "/global")
    assert_signed(global_copy)
    assert global_copy.body == delivery.body  # the same event...
    assert global_copy.headers["webhook-id"] != delivery.headers["webhook-id"]  # ...own message

    wait_deliveries(live_server, "hook-failed", {"delivered"})
    (failed,) = [r for r in webhook_receiver.for_event("hook-failed") if r.path == "/"]
    assert failed.json()["type"] == "event.failed"
    assert failed.json()["data"]["error"]["code"] == "table_not_found"


@pytest.mark.slow
def test_retries_after_a_500_and_gives_up_after_a_400_or_the_attempt_limit(
    live_server: ServerProcess, webhook_receiver: WebhookReceiver
) -> None:
    cases = {"hook-retry": "/answer/500,200/retry", "hook-400": "/answer/400/final"}
    cases["hook-limit"] = "/answer/429/limit"  # retryable, but WEBHOOK_MAX_ATTEMPTS=3
    for event_id, path in cases.items():
        response = post(live_server, event_id, callback_url=webhook_receiver.url + path)
        assert response.status_code == 202

    retried = webhook_receiver.wait_for(cases["hook-retry"], 2)
    assert [r.answered for r in retried] == [500, 200]
    assert retried[0].headers["webhook-id"] == retried[1].headers["webhook-id"]  # receivers dedupe
    for received in retried:
        assert_signed(received)

    limited = webhook_receiver.wait_for(cases["hook-limit"], 3)
    assert [r.answered for r in limited] == [429, 429, 429]
    views = {
        event_id: next(
            d
            for d in wait_deliveries(live_server, event_id, {"delivered", "failed"})
            if d["url"].endswith(path)
        )
        for event_id, path in cases.items()
    }
    assert views["hook-retry"]["status"] == "delivered" and views["hook-retry"]["attempts"] == 2
    assert [a["status_code"] for a in views["hook-retry"]["history"]] == [500, 200]
    assert views["hook-400"]["status"] == "failed" and views["hook-400"]["attempts"] == 1
    assert views["hook-limit"]["status"] == "failed" and views["hook-limit"]["attempts"] == 3
    # The 400 was final: by now (two backoff rounds later) it was still sent only once.
    assert len(webhook_receiver.wait_for(cases["hook-400"], 2, timeout_s=0.5)) == 1


@pytest.mark.slow
def test_a_restart_resumes_a_pending_delivery(
    live_server: ServerProcess, webhook_receiver: WebhookReceiver, live_server_crash: Crash
) -> None:
    """The session's one kill -9 of the shared server (tests/support/crash.py) came while
    HOOK_EVENT's callback, answered 500 once, waited for its retry."""
    killed_at = live_server_crash.killed_at
    hits = webhook_receiver.wait_for(HOOK_PATH, 3, timeout_s=60)
    assert hits[0].at < killed_at  # tried before the kill
    assert [r.answered for r in hits][-1] == 200
    assert hits[-1].at > killed_at  # sent by the restarted server
    (view,) = [d for d in deliveries(live_server, HOOK_EVENT) if d["url"].endswith(HOOK_PATH)]
    assert view["status"] == "delivered" and view["attempts"] == len(hits) == 3


@pytest.mark.slow
def test_callback_urls_are_checked_at_intake(
    live_server: ServerProcess, webhook_receiver: WebhookReceiver
) -> None:
    bad_urls = {
        "ftp://127.0.0.1/x": "url_not_allowed",
        "http://169.254.169.254/latest": "url_not_allowed",
        "not a url": "url_not_allowed",
        42: "string_type",  # the payload model types callback_url
    }
    for bad, error_type in bad_urls.items():
        response = post(live_server, "hook-bad", callback_url=bad)
        assert response.status_code == 422, bad
        (error,) = response.json()["detail"]
        assert error["type"] == error_type and error["loc"] == [
            "body",
            "event_data",
            "callback_url",
        ]
    # The same event id with another callback is another body: 409, not a silent re-target.
    assert post(live_server, "hook-same", callback_url=webhook_receiver.url).status_code == 202
    assert (
        post(live_server, "hook-same", callback_url=webhook_receiver.url + "/x").status_code == 409
    )


def test_webhook_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET is not"):
        check_settings(make_settings(tmp_path, webhook_url="https://example.com/hook"))
    with pytest.raises(ValueError, match="whsec_"):
        check_settings(make_settings(tmp_path, webhook_secret="not base64!"))
    private = make_settings(tmp_path, webhook_url="http://10.1.2.3/", webhook_secret=WEBHOOK_SECRET)
    with pytest.raises(ValueError, match="private"):
        check_settings(private)
    with pytest.raises(StepFailed) as refused:
        check_callback_url("https://example.com/hook", make_settings(tmp_path))
    assert refused.value.code == "webhooks_disabled"
    secret = make_settings(tmp_path, webhook_secret=WEBHOOK_SECRET)
    assert check_callback_url("https://example.com/h", secret) == "https://example.com/h"
    with pytest.raises(StepFailed) as loopback:
        check_callback_url("http://127.0.0.1:9/h", secret)
    assert loopback.value.code == ErrorCode.URL_NOT_ALLOWED


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    delays = [backoff_s(n, base_s=5) for n in range(1, 6)]
    for n, delay in enumerate(delays, start=1):
        assert 5 * 2 ** (n - 1) / 2 <= delay <= 5 * 2 ** (n - 1)
    assert backoff_s(30, base_s=5) <= 3600
    assert backoff_s(1, base_s=5, retry_after="120") == 120


def test_an_outcome_a_crash_never_announced_is_delivered_at_startup(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    """Scheduled at intake, event finished, process died before the terminal message."""
    settings = make_settings(
        tmp_path,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allow_private=True,
        webhook_url=webhook_receiver.url + "/answer/200/startup",
    )
    store = EventStore(settings.database_url)
    store.create(NewEvent("crashed-1", "query", "0" * 64, {"text": "hi"}))
    first = Webhooks(settings, store)
    first.schedule("crashed-1", None)
    assert store.claim("crashed-1", max_attempts=3, owner="test", lease_s=30) is not None
    store.complete("crashed-1", {"matches": []})  # ...and the process dies here

    first.stop()
    second = Webhooks(settings, store)
    second.start()
    try:
        (received,) = webhook_receiver.wait_for("/answer/200/startup", 1)
    finally:
        second.stop()
        store.close()
    assert_signed(received)
    assert received.json()["data"]["event_id"] == "crashed-1"
