"""uvicorn's httptools protocol with a cap on the request head (431 past it).

httptools has no limit on the request line and headers: it buffers whatever arrives until the
blank line, so ten connections trickling megabyte headers cost ~600 MB and seconds of event
loop time before the app sees anything (BENCHMARKS.md "Security edge"). This protocol counts
the bytes of the head as they arrive and the headers as they are parsed, and answers 431 and
closes as soon as MAX_HEADER_BYTES or MAX_HEADER_COUNT is passed.

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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def _send_431(self) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": head_too_large_message(self._limits)}).encode()
        head = [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
