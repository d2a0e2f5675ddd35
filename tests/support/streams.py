"""Live-result clients: one WebSocket subscription or SSE stream, read to its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def ws_url(base_url: str, event_id: str) -> str:
    return base_url.replace("http://", "ws://") + f"/events/{event_id}/ws"


def ws_messages(
    base_url: str,
    event_id: str,
    *,
    token: str | None = None,
    subprotocol_token: str | None = None,
    timeout_s: float = 120.0,
) -> tuple[list[dict[str, Any]], int | None]:
    """Every message of one WebSocket subscription and its close code."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    protocols = ["bearer", subprotocol_token] if subprotocol_token else None
    messages: list[dict[str, Any]] = []
    with connect(
        ws_url(base_url, event_id),
        additional_headers=headers,
        subprotocols=protocols,  # type: ignore[arg-type]
        open_timeout=30,
        proxy=None,  # only ever 127.0.0.1
    ) as socket:
        try:
            while True:
                messages.append(json.loads(socket.recv(timeout=timeout_s)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            return messages, code


def sse_messages(
    base_url: str, event_id: str, *, token: str, timeout_s: float = 120.0
) -> Iterator[dict[str, Any]]:
    """The SSE stream of one event, parsed; ends when the server ends it."""
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url}/events/{event_id}/stream"
    with httpx.stream("GET", url, headers=headers, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, data = None, []
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data.append(line.partition(":")[2].strip())
            elif not line and data:
                message = json.loads("\n".join(data))
                assert message["type"] == kind  # the SSE event name mirrors the message type
                yield message
                kind, data = None, []


def segments_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["segment"] for m in messages if m["type"] == "segment"]


def final(messages: list[dict[str, Any]]) -> dict[str, Any]:
    last = messages[-1]
    assert last["type"] == "status" and last["status"] in ("completed", "failed"), last
    return last
