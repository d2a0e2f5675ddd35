"""FastAPI dependencies as Annotated aliases (the only skyhigh module that imports FastAPI)."""

from __future__ import annotations

import hmac
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Query, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from skyhigh.api.tokens import InvalidToken
from skyhigh.domain.errors import EventNotFound, QuotaExceeded
from skyhigh.domain.tenancy import Principal, Scope, event_key
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
            return Principal.static(subject="dev", method="open")
        raise _unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'", token_given=False
        )
    try:
        principal = verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized(str(exc), token_given=True) from None
    # Every bearer route counts against the principal's request rate (429 past it).
    await runtime.quotas.check_request(principal.owner)
    return principal


PrincipalDep = Annotated[Principal, Depends(require_token)]


async def require_events_read(principal: PrincipalDep) -> Principal:
    principal.require(Scope.EVENTS_READ, "reading events")
    return principal


ReaderDep = Annotated[Principal, Depends(require_events_read)]

OwnerQuery = Annotated[
    str | None,
    Query(
        max_length=256,
        description="admin only: read another principal's event (`token` or `jwt:<sub>`)",
    ),
]


def resolve_event(principal: Principal, event_id: str, owner: str | None) -> str:
    """The stored key of the event this principal names: its own, or with admin any owner's.

    The one place reads map (principal, event_id) to a key (skyhigh.domain.tenancy); a key
    outside the principal's namespace cannot be named, so a foreign id is simply not found.
    """
    if owner is not None and owner != principal.owner:
        principal.require(Scope.ADMIN, "reading another principal's events")
    key = event_key(owner or principal.owner, event_id)
    if key is None:
        raise EventNotFound(event_id)
    return key


async def get_event_key(principal: ReaderDep, event_id: str, owner: OwnerQuery = None) -> str:
    return resolve_event(principal, event_id, owner)


EventKeyDep = Annotated[str, Depends(get_event_key)]


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
            return WebSocketAuth(Principal.static(subject="dev", method="open"), subprotocol, None)
        return WebSocketAuth(None, subprotocol, "missing bearer token")
    try:
        principal = verifier.verify(token)
        await runtime.quotas.check_request(principal.owner)
    except (InvalidToken, QuotaExceeded) as exc:
        return WebSocketAuth(None, subprotocol, str(exc))
    return WebSocketAuth(principal, subprotocol, None)


WebSocketAuthDep = Annotated[WebSocketAuth, Depends(websocket_auth)]


async def sees_internals(connection: HTTPConnection) -> bool:
    """Whether the caller may see worker ids (host:pid) and running event keys on /status: an
    `admin` principal, or METRICS_TOKEN. Anyone else (the route is public) gets counts."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    runtime: Runtime = connection.state.runtime
    expected = runtime.settings.metrics_token
    if expected is not None and hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        return True
    try:
        return runtime.verifier.verify(token).admin
    except InvalidToken:
        return False


InternalsDep = Annotated[bool, Depends(sees_internals)]


async def require_metrics_token(connection: HTTPConnection) -> None:
    """With METRICS_TOKEN set, /metrics needs it as a bearer token; unset, /metrics is public.

    A separate token: a scraper should not hold a key that can submit events. The header is read
    here rather than through `bearer_scheme`, which would mark /metrics as always secured in the
    OpenAPI schema while by default it is public.
    """
    runtime: Runtime = connection.state.runtime
    expected = runtime.settings.metrics_token
    if expected is None:
        return
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token: /metrics needs METRICS_TOKEN", token_given=False)
    if not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise _unauthorized("the bearer token is not the METRICS_TOKEN", token_given=True)
