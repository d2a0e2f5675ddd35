"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer and slow every request)."""

from __future__ import annotations

import json
import re
import uuid
from typing import NamedTuple

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skyhigh.api import openai_compat
from skyhigh.api.openai_compat import errors as openai_errors
from skyhigh.api.tokens import InvalidToken, TokenVerifier
from skyhigh.observability.logs import request_id_var

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class BodyTooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body parser lets it through."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=_too_large_message(max_bytes))


def _too_large_message(max_bytes: int) -> str:
    return (
        f"request body is larger than MAX_BODY_BYTES ({max_bytes} bytes); "
        "send less, or use POST /events/upload for audio files"
    )


class BodyLimitMiddleware:
    """413 for bodies over max_bytes, decided from Content-Length or while streaming.

    The body is never read past the limit, so an oversized upload costs no memory.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": _too_large_message(self.max_bytes)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Carries X-Request-ID (the client's, if sane, else a new one) into logs and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class HeadLimits(NamedTuple):
    max_bytes: int  # request line + headers
    max_count: int  # headers


def head_too_large_message(limits: HeadLimits) -> str:
    return (
        f"request headers are larger than MAX_HEADER_BYTES ({limits.max_bytes} bytes) or more "
        f"than MAX_HEADER_COUNT ({limits.max_count}); send fewer or smaller headers"
    )


class HeaderLimitMiddleware:
    """431 for a request head over MAX_HEADER_BYTES or MAX_HEADER_COUNT, under any server.

    The server protocol (skyhigh.api.http_server) refuses such heads while they arrive; this
    is the same rule for servers run without it (plain `uvicorn main:app`, test clients).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_count: int) -> None:
        self.app = app
        self.limits = HeadLimits(max_bytes, max_count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        size += sum(len(name) + len(value) + 4 for name, value in headers)  # ": " and CRLF
        if len(headers) > self.limits.max_count or size > self.limits.max_bytes:
            body = {"detail": head_too_large_message(self.limits)}
            await JSONResponse(body, status_code=431, headers={"connection": "close"})(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


class AuthenticateFirstMiddleware:
    """The bearer check for protected paths, before anything reads the request body.

    The route dependency (skyhigh.api.dependencies.require_token) still runs and stays the
    source of the principal; this only makes sure an anonymous 30 MB body is answered 401
    without being read or parsed. It accepts exactly what require_token accepts (same
    verifier, same header parsing) and answers with the same 401: status, detail,
    WWW-Authenticate, and OpenAI's error shape under /v1.
    """

    def __init__(self, app: ASGIApp, *, protected_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = protected_prefixes

    def _protected(self, path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # WebSockets authenticate in their route (a browser sends the token as a subprotocol).
        if scope["type"] != "http" or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        runtime = scope.get("state", {}).get("runtime")
        if runtime is None:  # no lifespan state: nothing to check against; the route decides
            await self.app(scope, receive, send)
            return
        failure = _bearer_failure(runtime.verifier, scope)
        if failure is None:
            await self.app(scope, receive, send)
            return
        detail, challenge = failure
        headers = {"WWW-Authenticate": challenge}
        if _under(scope["path"], openai_compat.PREFIX):
            response: Response = openai_errors.from_http(401, detail, headers).response()
        else:
            response = JSONResponse({"detail": detail}, status_code=401, headers=headers)
        await response(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _bearer_failure(verifier: TokenVerifier, scope: Scope) -> tuple[str, str] | None:
    """(detail, WWW-Authenticate) when require_token would refuse the request, else None."""
    authorization = Headers(scope=scope).get("authorization")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        if verifier.open_access:
            return None
        return "missing bearer token: send 'Authorization: Bearer <token>'", "Bearer"
    try:
        verifier.verify(credentials)
    except InvalidToken as exc:
        return str(exc), 'Bearer error="invalid_token"'
    return None
