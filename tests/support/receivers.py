"""A real webhook receiver: an HTTP server on 127.0.0.1 that records every POST."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
            return self._about(event_id, prefix)

    def wait_for_event(self, event_id: str, prefix: str = "/", timeout_s: float = 60.0) -> Received:
        """The first delivery about one event, waiting for it to arrive."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not (hits := self._about(event_id, prefix)):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no webhook for {event_id} within {timeout_s} s")
                self._lock.wait(max(0.0, deadline - time.monotonic()))
            return hits[0]

    def _about(self, event_id: str, prefix: str) -> list[Received]:
        return [
            r
            for r in self.received
            if r.path.startswith(prefix) and r.json()["data"]["event_id"] == event_id
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
