"""FastAPI dependencies as Annotated aliases (the only skyhigh module that imports FastAPI)."""

from __future__ import annotations

import hmac
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from skyhigh.api.tokens import InvalidToken, Principal
from skyhigh.intake.service import Intake
from skyhigh.live.streams import StreamBroker
from skyhigh.processing.runtime import Runtime
from skyhigh.store.events import EventStore
from skyhigh.webhooks.sender import Webhooks

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API token from API_TOKENS (or a signed JWT when AUTH_MODE=jwt).",
)


async def get_runtime(connection: HTTPConnection) -> Runtime:
    # HTTPConnection: the same dependency serves HTTP requests and WebSockets.
    runtime: Runtime = connection.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_intake(connection: HTTPConnection) -> Intake:
    intake: Intake = connection.state.intake
    return intake


IntakeDep = Annotated[Intake, Depends(get_intake)]


async def get_store(runtime: RuntimeDep) -> EventStore:
    return runtime.store


StoreDep = Annotated[EventStore, Depends(get_store)]


def _unauthorized(detail: str, *, token_given: bool) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if token_given else "Bearer"
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


async def require_token(
    connection: HTTPConnection,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Accept the request only with a valid `Authorization: Bearer <token>` header.

    Dependencies here are `async def`: they do microseconds of work, and a sync dependency
    would cost a threadpool hop each (measured: ~2 ms apiece under load). It reads the verifier
    from the connection itself: every dependency level is resolved on every request.
    """
    runtime: Runtime = connection.state.runtime
    verifier = runtime.verifier
    if credentials is None:
        if verifier.open_access:
            return Principal(subject="dev", method="open")
        raise _unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'", token_given=False
        )
    try:
        return verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized(str(exc), token_given=True) from None


async def get_streams(runtime: RuntimeDep) -> StreamBroker:
    return runtime.streams


async def get_webhooks(runtime: RuntimeDep) -> Webhooks:
    return runtime.webhooks


StreamsDep = Annotated[StreamBroker, Depends(get_streams)]
WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]

# Browsers cannot set headers on a WebSocket: `new WebSocket(url, ["bearer", token])` sends
# `Sec-WebSocket-Protocol: bearer, <token>`, and the server selects "bearer".
WS_BEARER_PROTOCOL = "bearer"


class WebSocketAuth(NamedTuple):
    principal: Principal | None
    subprotocol: str | None  # to echo when accepting (a browser fails the socket otherwise)
    error: str | None  # why the connection must be closed with 1008


async def websocket_auth(websocket: WebSocket, runtime: RuntimeDep) -> WebSocketAuth:
    """The bearer token from `Authorization` or from `Sec-WebSocket-Protocol: bearer, <token>`."""
    offered: list[str] = list(websocket.scope.get("subprotocols", []))
    subprotocol = WS_BEARER_PROTOCOL if WS_BEARER_PROTOCOL in offered else None
    token: str | None = None
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    elif subprotocol is not None:
        index = offered.index(WS_BEARER_PROTOCOL)
        token = offered[index + 1] if index + 1 < len(offered) else None
    verifier = runtime.verifier
    if token is None:
        if verifier.open_access:
            return WebSocketAuth(Principal(subject="dev", method="open"), subprotocol, None)
        return WebSocketAuth(None, subprotocol, "missing bearer token")
    try:
        return WebSocketAuth(verifier.verify(token), subprotocol, None)
    except InvalidToken as exc:
        return WebSocketAuth(None, subprotocol, str(exc))


WebSocketAuthDep = Annotated[WebSocketAuth, Depends(websocket_auth)]


async def require_metrics_token(
    connection: HTTPConnection,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """With METRICS_TOKEN set, /metrics needs it as a bearer token; unset, /metrics is public.

    A separate token: a scraper should not hold a key that can submit events.
    """
    runtime: Runtime = connection.state.runtime
    expected = runtime.settings.metrics_token
    if expected is None:
        return
    if credentials is None:
        raise _unauthorized("missing bearer token: /metrics needs METRICS_TOKEN", token_given=False)
    if not hmac.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        raise _unauthorized("the bearer token is not the METRICS_TOKEN", token_given=True)
