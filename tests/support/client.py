"""Talking to a running app: waiting for an outcome, dropping the default token, sample audio."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.support.settings import DATA

TERMINAL = {"completed", "failed"}


@contextmanager
def without_auth(client: TestClient) -> Iterator[TestClient]:
    """The same running app, with the session client's default Authorization header removed."""
    saved = client.headers.pop("Authorization")
    try:
        yield client
    finally:
        client.headers["Authorization"] = saved


def wait_terminal(
    get: Callable[[str], httpx.Response], event_id: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = get(f"/events/{event_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        if record["status"] in TERMINAL:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"event {event_id} still {record['status']} after {timeout_s}s")
        time.sleep(0.05)


def jfk_base64() -> str:
    return base64.b64encode((DATA / "jfk.wav").read_bytes()).decode()


def run(client: TestClient, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Submit one event through the in-process app and wait for its terminal record."""
    event_id = f"{event_type}-{uuid.uuid4().hex[:10]}"
    response = client.post(
        "/events/", json={"event_id": event_id, "event_type": event_type, "event_data": data}
    )
    assert response.status_code == 202, response.text
    return wait_terminal(client.get, event_id)


def search(client: TestClient, text: str, **options: Any) -> list[dict[str, Any]]:
    """A completed query's matches."""
    record = run(client, "query", {"text": text, **options})
    assert record["status"] == "completed", record
    return list(record["result"]["matches"])
