"""The one pure-ASGI layer in front of the routes (no BaseHTTPMiddleware: it would buffer).

In order, for each request: a request id for the logs and the answer; 431 for an oversized
head; who is asking (skyhigh.api.auth, verified once, the outcome in the scope) with a 401 for
a protected path before any of the body is read; 413 for a body over MAX_BODY_BYTES, decided
from Content-Length or while it streams. One layer instead of four stacked ones: each layer
costs a call and a scope walk on every request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import SecretStr
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skyhigh.api import auth
from skyhigh.api.openai_compat import PREFIX as OPENAI_PREFIX
from skyhigh.api.openai_compat import errors as openai_errors
from skyhigh.api.paths import under
from skyhigh.api.request_ids import request_ids
from skyhigh.api.tokens import TokenVerifier
from skyhigh.observability.logs import request_id_var

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
METRICS_PATH = "/metrics"


class HeadLimits(NamedTuple):
    max_bytes: int  # request line + headers
    max_count: int  # headers


def head_too_large_message(limits: HeadLimits) -> str:
    return (
        f"request headers are larger than MAX_HEADER_BYTES ({limits.max_bytes} bytes) or more "
        f"than MAX_HEADER_COUNT ({limits.max_count}); send fewer or smaller headers"
    )


def too_large_message(max_bytes: int) -> str:
    return (
        f"request body is larger than MAX_BODY_BYTES ({max_bytes} bytes); "
        "send less, or use POST /events/upload for audio files"
    )


class BodyTooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body parser lets it through."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=too_large_message(max_bytes))


@dataclass(frozen=True)
class EdgeConfig:
    head: HeadLimits  # 431 past either (also enforced while it arrives: api.http_server)
    max_body_bytes: int
    protected: tuple[str, ...]  # path prefixes that need the bearer credential
    metrics_token: SecretStr | None  # unset: /metrics is public


class _Head(NamedTuple):
    """What the layer needs from the headers, gathered in one pass."""

    size: int
    header_count: int
    request_id: str | None
    authorization: str | None
    content_length: int | None  # None: absent, not a number, or beside Transfer-Encoding


def _read_head(scope: Scope) -> _Head:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    request_id = authorization = length = None
    chunked = False
    for name, value in headers:
        size += len(name) + len(value) + 4  # ": " and CRLF
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == REQUEST_ID_HEADER:
            request_id = value.decode("latin-1")
        elif name == b"transfer-encoding":
            chunked = True
    return _Head(size, len(headers), request_id, authorization, None if chunked else length)


def _verifier(scope: Scope) -> TokenVerifier | None:
    state = scope.get("state")
    return None if state is None else state.get("verifier")


class EdgeMiddleware:
    """Request id, head limit, authentication and body limit in one pass over the scope."""

    def __init__(self, app: ASGIApp, *, config: EdgeConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = _read_head(scope)
        request_id = _request_id(head.request_id)
        reset = request_id_var.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            refusal = self._refusal(scope, head)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            try:
                await self.app(scope, self._limited(receive, head), send_with_id)
            except BodyTooLarge:
                if not started:
                    await self._body_too_large()(scope, receive, send_with_id)
        finally:
            request_id_var.reset(reset)

    def _refusal(self, scope: Scope, head: _Head) -> Response | None:
        """The answer that ends the request here (431, 401, 413), else None."""
        limits = self.config.head
        if head.header_count > limits.max_count or head.size > limits.max_bytes:
            detail = {"detail": head_too_large_message(limits)}
            return JSONResponse(detail, status_code=431, headers={"connection": "close"})
        path: str = scope["path"]
        outcome = self._authenticate(scope, path, head.authorization)
        if outcome is not None and outcome.error is not None:
            return _unauthorized(path, outcome)
        declared = head.content_length
        if declared is not None and declared > self.config.max_body_bytes:
            return self._body_too_large()
        return None

    def _authenticate(
        self, scope: Scope, path: str, authorization: str | None
    ) -> auth.Authentication | None:
        if under(path, *self.config.protected):
            verifier = _verifier(scope)
            if verifier is None:  # no lifespan ran: nothing to accept a credential with
                return auth.Authentication(None, auth.MISSING_TOKEN)
            outcome = auth.authenticate(verifier, auth.bearer_token(authorization))
            scope[auth.AUTH_SCOPE_KEY] = outcome
            return outcome
        if path == METRICS_PATH and self.config.metrics_token is not None:
            return auth.check_metrics_token(self.config.metrics_token, authorization)
        return None

    def _limited(self, receive: Receive, head: _Head) -> Receive:
        """`receive`, refusing past MAX_BODY_BYTES; never read past it, so it costs no memory."""
        if head.content_length is not None:
            return receive  # already checked, and the server reads no more than declared
        max_bytes = self.config.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        return limited_receive

    def _body_too_large(self) -> Response:
        detail = {"detail": too_large_message(self.config.max_body_bytes)}
        return JSONResponse(detail, status_code=413, headers={"connection": "close"})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate the handshake; the route accepts and closes with 1008 on a failure
        (a refused handshake reaches a browser only as 1006, without a reason)."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        found = dict(headers)
        reset = request_id_var.set(_request_id(found.get(REQUEST_ID_HEADER, b"").decode("latin-1")))
        try:
            verifier = _verifier(scope)
            if verifier is not None and under(scope["path"], *self.config.protected):
                authorization = found.get(b"authorization", b"").decode("latin-1") or None
                offered = list(scope.get("subprotocols", []))
                outcome = auth.authenticate_websocket(verifier, authorization, offered)
                scope[auth.AUTH_SCOPE_KEY] = outcome
            await self.app(scope, receive, send)
        finally:
            request_id_var.reset(reset)


def _request_id(given: str | None) -> str:
    """The client's X-Request-ID if it is sane, else a new one."""
    return given if given and _SAFE_REQUEST_ID.match(given) else request_ids.next()


def _unauthorized(path: str, outcome: auth.Authentication) -> Response:
    """The 401, in OpenAI's error shape under /v1."""
    headers = {"WWW-Authenticate": outcome.challenge}
    if under(path, OPENAI_PREFIX):
        return openai_errors.from_http(401, outcome.error, headers).response()
    return JSONResponse({"detail": outcome.error}, status_code=401, headers=headers)
