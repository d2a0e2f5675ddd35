"""uvicorn's httptools protocol with a cap on the request head (431 past it) and time limits.

httptools has no limit on the request line and headers: it buffers whatever arrives until the
blank line, so ten connections trickling megabyte headers cost ~600 MB and seconds of event
loop time before the app sees anything (BENCHMARKS.md "Security edge"). This protocol counts
the bytes of the head as they arrive and the headers as they are parsed, and answers 431 and
closes as soon as MAX_HEADER_BYTES or MAX_HEADER_COUNT is passed.

It also bounds how long a client may hold a connection without making progress, which plain
uvicorn does not (a connection that never sends a byte, or trickles one a second, is held
forever):

* waiting for a request head (a new connection, or an idle keep-alive one): the complete
  head must arrive within REQUEST_HEAD_TIMEOUT_S of the wait's start, however it trickles;
* receiving a body: at most REQUEST_BODY_TIMEOUT_S between two pieces of it (not counted
  while the app is not reading, so a slow app never cuts a fast client);
* while the app works on a request or streams a response (SSE), nothing: that is the app's.

Past either limit the client gets 408 (when no response has started) and the connection is
closed. A WebSocket leaves this protocol at its upgrade. uvicorn's own `--timeout-keep-alive`
(5 s by default) still closes idle keep-alive connections first.

Select it with uvicorn's `--http` option (the Dockerfile, `scripts/dev.sh serve` and the README
do)::

    uvicorn main:app --http skyhigh.api.http_server:HttpProtocol

Plain `uvicorn main:app` still answers 431 (skyhigh.api.middleware.EdgeMiddleware), but
only after the parser has buffered the whole head.
"""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from skyhigh.api.middleware import HeadLimits, head_too_large_message
from skyhigh.config import get_settings


@lru_cache(maxsize=1)
def _limits() -> HeadLimits:
    # Read once per process, from the same environment the app reads.
    intake = get_settings().intake
    return HeadLimits(intake.max_header_bytes, intake.max_header_count)


@lru_cache(maxsize=1)
def _timeouts() -> tuple[float, float]:
    intake = get_settings().intake
    return intake.request_head_timeout_s, intake.request_body_timeout_s


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools re-raises it wrapped."""


class HttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses an oversized request head while it arrives."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = _limits()
        self._in_head = True  # bytes arriving now belong to a request head
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._head_timeout_s, self._body_timeout_s = _timeouts()
        self._waiting_since = 0.0  # the start of the wait for a head, or the last body piece
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        self._timer = self.loop.call_later(self._head_timeout_s, self._check_progress)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._waiting_since = self.loop.time()  # the wait for the next head starts
        super().on_response_complete()

    def on_body(self, body: bytes) -> None:
        self._waiting_since = self.loop.time()
        super().on_body(body)

    def _check_progress(self) -> None:
        """Close a connection that stopped making progress (see the module docstring)."""
        self._timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            return  # closed, or upgraded to a WebSocket
        now = self.loop.time()
        cycle = self.cycle
        if self._in_head and (cycle is None or cycle.response_complete):
            due, what = self._waiting_since + self._head_timeout_s, "request head"
        elif not self._in_head and not self.flow.read_paused:
            due, what = self._waiting_since + self._body_timeout_s, "request body"
        else:  # the app is working, or not reading yet: look again later
            due, what = now + self._head_timeout_s, ""
        if now >= due:
            self._send_timeout(what)
            return
        self._timer = self.loop.call_later(due - now, self._check_progress)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        # A _HeadTooLarge from on_header surfaces as a parser error: send_400_response below.
        super().data_received(data)
        # Judged after parsing: a chunk that completes a small head may carry body bytes too.
        # A head still incomplete past the limit is refused; at most one read (256 KiB) over.
        if self._in_head and self._head_bytes > self._limits.max_bytes:
            self._send_431()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers 400 for any parser error; ours (raised in on_header) means 431.
        if self._refused:
            self._send_431()
        else:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_count:
            self._refused = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._waiting_since = self.loop.time()  # the body's first piece is due from here
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def _send_timeout(self, what: str) -> None:
        limit, setting = (
            (self._head_timeout_s, "REQUEST_HEAD_TIMEOUT_S")
            if what == "request head"
            else (self._body_timeout_s, "REQUEST_BODY_TIMEOUT_S")
        )
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            message = f"the {what} did not arrive within {limit:g} s ({setting})"
            body = json.dumps({"detail": message}).encode()
            self.transport.write(_close_response(b"408 Request Timeout", body))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() ends instead of waiting
            cycle.message_event.set()
        self.transport.close()

    def _send_431(self) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": head_too_large_message(self._limits)}).encode()
        self.transport.write(_close_response(b"431 Request Header Fields Too Large", body))
        self.transport.close()


def _close_response(status: bytes, body: bytes) -> bytes:
    head = [
        b"HTTP/1.1 " + status + b"\r\n",
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body
