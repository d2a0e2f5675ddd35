"""Helpers for the live-results tests: a webhook receiver, WebSocket and SSE clients."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

WEBHOOK_KEY = b"skyhigh-test-webhook-signing-key"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records every POST.

    The path scripts the answers: `/answer/500,200/<name>` answers 500 to the first request on
    that path and 200 afterwards (the last code repeats); any other path answers 200.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                code = receiver._answer(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, code))
                    receiver._lock.notify_all()
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, path: str) -> int:
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "answer":
            return 200
        codes = [int(code) for code in parts[1].split(",")]
        with self._lock:
            seen = sum(1 for r in self.received if r.path == path)
        return codes[min(seen, len(codes) - 1)]

    def wait_for(self, path: str, count: int, timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                hits = [r for r in self.received if r.path == path]
                if len(hits) >= count or time.monotonic() > deadline:
                    return hits
                self._lock.wait(max(0.0, deadline - time.monotonic()))

    def for_event(self, event_id: str, prefix: str = "/") -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.received
                if r.path.startswith(prefix) and r.json()["data"]["event_id"] == event_id
            ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
