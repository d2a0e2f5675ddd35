"""`WS /v1/realtime?intent=transcription` and `POST /v1/realtime/client_secrets`.

OpenAI's Realtime transcription sessions (skyhigh.realtime): the official SDK's
`client.realtime.connect(extra_query={"intent": "transcription"})` works unchanged.

Auth as on every route (the edge middleware verified `Authorization: Bearer` or the browser's
`["bearer", "<token>"]` subprotocols), or a client secret minted here (single use, short-lived).
A refused socket is accepted, sent an `error` event and closed with 1008 (a refused handshake
reaches a browser only as 1006); a refused admission, or an audio quota already used up, closes
with 1013 (try again later). The session's audio is charged to the quota as it streams
(skyhigh.realtime.metering); the charge that uses the hour up ends it like its other limits
(an `error` event, then close 1000), and what it streamed still becomes its event.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, WebSocket
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from skyhigh.api import auth
from skyhigh.api.dependencies import IntakeDep, PrincipalDep, RuntimeDep, WebSocketAuthDep
from skyhigh.domain.errors import QuotaExceeded
from skyhigh.domain.tenancy import Forbidden, Principal, Scope
from skyhigh.intake.service import Intake
from skyhigh.realtime import protocol as p
from skyhigh.realtime.admission import Refused
from skyhigh.realtime.client_secrets import looks_like_client_secret
from skyhigh.realtime.metering import AudioMeter
from skyhigh.realtime.service import RealtimeService
from skyhigh.realtime.session import RealtimeSession

router = APIRouter()  # the socket: reads its auth outcome itself
secrets_router = APIRouter()  # HTTP: mounted behind the bearer dependency

log = logging.getLogger("skyhigh.realtime")

WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


async def get_realtime(connection: HTTPConnection) -> RealtimeService:
    service: RealtimeService = connection.state.realtime
    return service


RealtimeDep = Annotated[RealtimeService, Depends(get_realtime)]


class ExpiresAfter(BaseModel):
    anchor: str = "created_at"
    seconds: int = Field(default=600, ge=10, le=7200)


class ClientSecretRequest(BaseModel):
    expires_after: ExpiresAfter | None = None
    session: dict[str, Any] | None = None  # accepted for OpenAI compatibility; sessions send it


@secrets_router.post(
    "/realtime/client_secrets",
    summary="Mint a single-use realtime key",
    # Under /v1 a body that does not validate is a 400 in OpenAI's shape, not FastAPI's 422.
    responses={
        400: {"description": "The body is not a valid client secret request"},
        401: {"description": "Missing or invalid bearer token"},
        403: {"description": "The credential lacks the events:write scope"},
    },
)
async def create_client_secret(
    principal: PrincipalDep,
    service: RealtimeDep,
    body: Annotated[ClientSecretRequest | None, Body()] = None,
) -> dict[str, Any]:
    """A secret a browser can open one realtime session with, as the caller, within its TTL
    (at most REALTIME_CLIENT_SECRET_TTL_S)."""
    principal.require(Scope.EVENTS_WRITE, "realtime sessions")
    ttl = body.expires_after.seconds if body and body.expires_after else None
    minted = service.secrets.mint(principal, ttl)
    return {
        "value": minted.value,
        "expires_at": minted.expires_at,
        "session": body and body.session,
    }


@router.websocket("/realtime")
async def realtime(
    websocket: WebSocket,
    outcome: WebSocketAuthDep,
    runtime: RuntimeDep,
    intake: IntakeDep,
    service: RealtimeDep,
    intent: str | None = None,
) -> None:
    """A transcription session: see skyhigh.realtime.protocol for the events."""
    await websocket.accept(subprotocol=outcome.subprotocol)
    lock = anyio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with lock:
            if websocket.application_state == WebSocketState.CONNECTED:
                try:
                    await websocket.send_text(json.dumps(event))
                except (WebSocketDisconnect, OSError, RuntimeError):
                    pass  # the client left; the receive loop sees it

    principal, refusal = _principal(websocket, outcome, service)
    if principal is None:
        await send(p.error_event(refusal, code="invalid_api_key", kind="authentication_error"))
        await websocket.close(WS_POLICY_VIOLATION, reason=refusal[:120])
        return
    problem = await _refusal(principal, runtime.quotas, service, intent)
    if problem is not None:
        message, code, close_code = problem
        await send(p.error_event(message, code=code))
        await websocket.close(close_code, reason=message[:120])
        return
    session_id = service.new_session_id()
    meter = AudioMeter(runtime.quotas, principal.owner)
    try:
        lag: list[RealtimeSession] = []
        with service.admission.admit(principal.owner, lambda: lag[0].lag_s() if lag else 0.0):
            spool = await service.open_spool(session_id, principal)
            assert service.engine is not None
            session = RealtimeSession(
                session_id, engine=service.engine, settings=service.settings, spool=spool, send=send
            )
            lag.append(session)
            try:
                await _run(websocket, session, service, send, meter)
            finally:
                with anyio.CancelScope(shield=True):
                    await meter.settle(session.spool.seconds)
                    await _become_event(service, intake, session)
    except Refused as exc:  # lost a race for the last place
        await send(p.error_event(str(exc), code=exc.code))
        await websocket.close(WS_TRY_AGAIN_LATER, reason=str(exc)[:120])


def _principal(
    websocket: WebSocket, outcome: auth.Authentication, service: RealtimeService
) -> tuple[Principal | None, str]:
    if outcome.principal is not None:
        return outcome.principal, ""
    headers = websocket.scope["headers"]
    authorization = dict(headers).get(b"authorization", b"").decode("latin-1") or None
    offered = list(websocket.scope.get("subprotocols", []))
    credential = auth.bearer_token(authorization) or auth.subprotocol_token(offered)
    if looks_like_client_secret(credential):
        assert credential is not None
        principal = service.secrets.redeem(credential)
        if principal is not None:
            return principal, ""
        return None, "the client secret is unknown, expired or already used; mint a new one"
    return None, outcome.error or "not authenticated"


async def _refusal(
    principal: Principal, quotas: Any, service: RealtimeService, intent: str | None
) -> tuple[str, str, int] | None:
    """Why this session may not start (message, error code, close code), else None."""
    if intent != "transcription":
        return (
            "only transcription sessions are served: connect with ?intent=transcription",
            ("unsupported_intent"),
            WS_POLICY_VIOLATION,
        )
    if service.engine is None:
        return (
            "realtime transcription is off on this server (REALTIME_ENABLED)",
            ("realtime_disabled"),
            WS_POLICY_VIOLATION,
        )
    try:
        principal.require(Scope.EVENTS_WRITE, "realtime sessions")
        await quotas.check_audio(principal.owner)
        service.admission.check(principal.owner)
    except Forbidden as exc:
        return str(exc), "forbidden", WS_POLICY_VIOLATION
    except QuotaExceeded as exc:
        return str(exc), "quota_exceeded", WS_TRY_AGAIN_LATER
    except Refused as exc:
        return str(exc), exc.code, WS_TRY_AGAIN_LATER
    return None


async def _run(
    websocket: WebSocket,
    session: RealtimeSession,
    service: RealtimeService,
    send: Any,
    meter: AudioMeter,
) -> None:
    await send(p.server_event("session.created", session=session.describe()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.run_decoder)
        reason = await _receive(websocket, session, service, meter)
        tg.cancel_scope.cancel()
    if reason is not None and websocket.application_state == WebSocketState.CONNECTED:
        await websocket.close(1000, reason=reason[:120])


async def _receive(
    websocket: WebSocket, session: RealtimeSession, service: RealtimeService, meter: AudioMeter
) -> str | None:
    """Handle client events until the client leaves (None) or a limit ends the session."""
    idle = service.settings.realtime_idle_timeout_s
    ends_at = time.monotonic() + service.max_session_s
    while True:
        remaining = ends_at - time.monotonic()
        message: dict[str, Any] | None = None
        with anyio.move_on_after(min(idle, max(remaining, 0))):
            message = dict(await websocket.receive())
        if message is None:
            expired = remaining <= idle
            text = (
                f"the session reached its maximum length of {service.max_session_s:g} s "
                "(REALTIME_MAX_SESSION_S)"
                if expired
                else f"no client event for {idle:g} s (REALTIME_IDLE_TIMEOUT_S)"
            )
            await session.error(text, code="session_expired" if expired else "idle_timeout")
            return text
        if message["type"] == "websocket.disconnect":
            return None
        await _handle_frame(session, message)
        try:
            await meter.track(session.spool.seconds)
        except QuotaExceeded as exc:
            text = (
                f"the audio quota is used up: {exc}; the window ends in {exc.retry_after_s} s. "
                f"The session ends here; its audio so far becomes event "
                f"{session.spool.meta.event_id}"
            )
            await session.error(text, code="quota_exceeded")
            return text


async def _handle_frame(session: RealtimeSession, message: dict[str, Any]) -> None:
    raw = message.get("text")
    if raw is None and message.get("bytes") is not None:
        raw = message["bytes"].decode("utf-8", errors="replace")
    try:
        event = json.loads(raw or "")
    except ValueError:
        event = None
    if not isinstance(event, dict):
        await session.error("each message must be a JSON object", code="invalid_json")
        return
    await session.handle(event)


async def _become_event(service: RealtimeService, intake: Intake, session: RealtimeSession) -> None:
    try:
        await service.finish(intake, session.spool)
    except Exception:  # left spooled: the next start makes it an event
        log.exception("realtime session not yet an event")
