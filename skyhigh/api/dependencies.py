"""FastAPI dependencies as Annotated aliases: the lifespan state and the caller's principal."""

from __future__ import annotations

import hmac
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Query, WebSocket, status
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from skyhigh.api import auth
from skyhigh.api.auth import Authentication, authentication_of
from skyhigh.api.state import AppState
from skyhigh.domain.errors import EventNotFound, QuotaExceeded
from skyhigh.domain.tenancy import Principal, Scope, event_key
from skyhigh.intake.service import Intake
from skyhigh.live.streams import StreamBroker
from skyhigh.processing.runtime import Runtime
from skyhigh.store.events import EventStore
from skyhigh.webhooks.sender import Webhooks


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


class BearerScheme(SecurityBase):
    """The bearer scheme as OpenAPI shows it (the Authorize button); checks nothing itself.

    The edge middleware (skyhigh.api.middleware) verified the credential before the body was
    read and left the outcome in the scope, where `require_token` picks it up: nothing is
    parsed or decoded twice.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            description="An API token from API_TOKENS (or a signed JWT when AUTH_MODE=jwt)."
        )
        self.scheme_name = "HTTPBearer"

    async def __call__(self) -> None:
        return None


bearer_scheme = BearerScheme()


async def _checked_principal(connection: HTTPConnection, runtime: Runtime) -> Principal:
    """The principal the edge middleware left in the scope, counted against its request rate
    (429 past it); 401 without one (or in an app built without the middleware)."""
    outcome = authentication_of(connection.scope)
    if outcome is None or outcome.principal is None:
        outcome = outcome or Authentication(None, auth.MISSING_TOKEN)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=outcome.error,
            headers={"WWW-Authenticate": outcome.challenge},
        )
    await runtime.quotas.check_request(outcome.principal.owner)
    return outcome.principal


async def require_token(
    connection: HTTPConnection,
    runtime: RuntimeDep,
    _scheme: Annotated[None, Depends(bearer_scheme)],
) -> Principal:
    """The caller's principal, counted against its request rate (429 past it).

    Dependencies here are `async def`: they do microseconds of work, and a sync dependency
    would cost a threadpool hop each (measured: ~2 ms apiece under load).
    """
    return await _checked_principal(connection, runtime)


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


async def websocket_auth(websocket: WebSocket, runtime: RuntimeDep) -> Authentication:
    """The handshake's outcome from the middleware (header or `bearer, <token>` subprotocol),
    with the request-rate quota applied; the route closes with 1008 when `error` is set."""
    outcome = authentication_of(websocket.scope)
    if outcome is None:
        return Authentication(None, "missing bearer token")
    if outcome.principal is not None:
        try:
            await runtime.quotas.check_request(outcome.principal.owner)
        except QuotaExceeded as exc:
            return outcome._replace(principal=None, error=str(exc))
    return outcome


WebSocketAuthDep = Annotated[Authentication, Depends(websocket_auth)]


async def sees_internals(connection: HTTPConnection) -> bool:
    """Whether the caller may see worker ids (host:pid) and running event keys on /status: an
    `admin` principal, or METRICS_TOKEN. Anyone else (the route is public) gets counts.

    /status is public, so the edge middleware does not authenticate it; an optional credential
    is verified here, with the same parser and verifier.
    """
    credential = auth.bearer_token(connection.headers.get("authorization"))
    if credential is None:
        return False
    expected = connection.state.runtime.settings.metrics_token
    if expected is not None and hmac.compare_digest(
        credential.encode(), expected.get_secret_value().encode()
    ):
        return True
    principal = auth.authenticate(connection.state.verifier, credential).principal
    return principal is not None and principal.admin


InternalsDep = Annotated[bool, Depends(sees_internals)]


class Submitter(NamedTuple):
    intake: Intake
    principal: Principal


async def get_submitter(connection: HTTPConnection, principal: PrincipalDep) -> Submitter:
    """Intake and the checked principal in one dependency, for the submit routes.

    `PrincipalDep` is the router's own dependency, so FastAPI solves it once per request and
    the request is counted once against the principal's rate.
    """
    state: AppState = connection.scope["state"]  # what `connection.state` wraps, unwrapped
    return Submitter(state["intake"], principal)


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
