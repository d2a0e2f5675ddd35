"""The /events API: EventSchema (one model per registered event type) and the handlers.

Handlers stay thin: creating routes build a `Submission` and call the intake service once;
domain exceptions (conflict, not found, queue full, invalid input) become HTTP answers in
skyhigh.api.errors, not here.

Tenancy (skyhigh.domain.tenancy): every route acts for the caller's principal. Creating routes
hand it to intake; reading routes take `EventKeyDep`, the stored key of the caller's own event
(or, for `admin`, of `?owner=`'s), so another principal's event is never found (404).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import anyio
from fastapi import (
    APIRouter,
    Body,
    Depends,
    File,
    Form,
    HTTPException,
    Query,
    Response,
    UploadFile,
    WebSocket,
    status,
)
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from skyhigh.api.auth import Authentication
from skyhigh.api.dependencies import (
    EventKeyDep,
    IntakeDep,
    OwnerQuery,
    PrincipalDep,
    ReaderDep,
    RuntimeDep,
    StoreDep,
    StreamsDep,
    SubmitterDep,
    WebhooksDep,
    WebSocketAuthDep,
    require_events_read,
    resolve_event,
)
from skyhigh.api.json_body import json_limits_route
from skyhigh.api.live import KEEPALIVE, pump_websocket, sse_event, sse_response
from skyhigh.api.submit_path import Accepted
from skyhigh.domain.errors import EventNotFound, QuotaExceeded
from skyhigh.domain.events import EVENT_ID_PATTERN, EventRecord, EventStatus, Transcript
from skyhigh.domain.payloads import EventPayload, SpeechUpload
from skyhigh.domain.tenancy import Forbidden, Scope
from skyhigh.intake.service import Submission
from skyhigh.live.streams import Lagged, StreamBroker, open_feed
from skyhigh.processing.registry import AUDIO_TYPES, EVENT_TYPES, UPLOAD_TYPE
from skyhigh.speech.subtitles import MEDIA_TYPES, RENDERERS
from skyhigh.store.events import EventStore

# JSON bodies within MAX_JSON_BODY_BYTES, except events carrying base64 audio; big ones are
# parsed off the event loop (skyhigh.api.json_body).
router = APIRouter(route_class=json_limits_route(large_body_types=AUDIO_TYPES))

EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN, min_length=1, max_length=128)]


class EventEnvelope(BaseModel):
    """What every event has; `event_data`'s model depends on `event_type`."""

    event_id: EventId = Field(
        description="Your id for this event (1-128 of A-Z a-z 0-9 . _ : -); makes retries safe."
    )
    event_type: str
    event_data: EventPayload


def _event_model(name: str, payload: type[EventPayload]) -> type[EventEnvelope]:
    """`{"event_type": name, "event_data": <payload>}`, one member of the EventSchema union."""
    title = payload.__name__.removesuffix("Payload") + "Event"
    model: type[EventEnvelope] = create_model(
        title,
        __base__=EventEnvelope,
        __doc__=payload.__doc__,
        event_type=(Literal[name], Field(description=f"`{name}`")),  # type: ignore[arg-type]
        event_data=(payload, Field(description=payload.__doc__)),
    )
    return model


# One model per registered type, told apart by `event_type`: validation, the OpenAPI schema
# and the unknown-type error all come from the registry (skyhigh.processing.registry).
if TYPE_CHECKING:
    EventSchema = EventEnvelope
else:
    EventSchema = Annotated[
        Union[tuple(_event_model(t.name, t.payload) for t in EVENT_TYPES.values())],  # noqa: UP007
        Field(discriminator="event_type"),
    ]


class EventPageOut(BaseModel):
    items: list[EventRecord]
    next_cursor: str | None


OPENAPI_EXAMPLES: dict[str, Any] = {
    name: {"summary": t.summary, "value": t.example} for name, t in EVENT_TYPES.items()
}

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    403: {"description": "The credential lacks the scope this needs (the message names it)"},
    409: {"description": "The event_id was already used for a different body"},
    413: {"description": "Body or audio larger than the configured limit"},
    422: {"description": "The event or its payload is invalid; the message says what to fix"},
    429: {"description": "The principal's rate or audio quota is used up; see Retry-After"},
    503: {"description": "Too many pending events; retry after the Retry-After delay"},
}


# Reading one event: 403 for `?owner=` without admin, or a credential without events:read.
READ_ERRORS: dict[int | str, dict[str, Any]] = {k: ERRORS[k] for k in (401, 403, 422, 429)}


class SpeechUploadForm(SpeechUpload):
    # `file` and `event_id` travel in the same form; FastAPI hands the model every field.
    model_config = ConfigDict(extra="ignore")
    # A metadata filter is a JSON object, which a form field cannot carry: JSON events only.
    filter: SkipJsonSchema[None] = None


def _accepted(record: EventRecord, response: Response) -> Accepted:
    status_url = f"/events/{record.event_id}"
    response.headers["Location"] = status_url
    return Accepted(event_id=record.event_id, status=record.status, status_url=status_url)


@router.post(
    "/",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={**ERRORS, 400: {"description": "The body cannot be parsed (not UTF-8 JSON)"}},
    summary="Submit an event",
)
async def create_event(
    event: Annotated[EventSchema, Body(openapi_examples=OPENAPI_EXAMPLES)],
    response: Response,
    submitter: SubmitterDep,
) -> Accepted:
    """Validate and store an event, then process it in the background (202 Accepted)."""
    # A small JSON body that validates is answered in front of the router, the same way
    # (skyhigh.api.submit_path); this handler answers the rest and documents the route.
    intake, principal = submitter
    submission = Submission(principal, event.event_id, event.event_type, event.event_data)
    record = await intake.accept(submission)
    return _accepted(record, response)


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={**ERRORS, 400: {"description": "The multipart body cannot be parsed"}},
    summary="Submit a speech event as a multipart file upload",
)
async def upload_speech(
    response: Response,
    intake: IntakeDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="Audio in any format ffmpeg reads")],
    event_id: Annotated[EventId, Form()],
    options: Annotated[SpeechUploadForm, Form()],
) -> Accepted:
    """Same contract as POST /events/ with event_type `speech`, for curl -F users."""
    submission = Submission(
        principal, event_id, UPLOAD_TYPE.name, options, upload=file.file, fields=("body",)
    )
    return _accepted(await intake.accept(submission), response)


@router.get(
    "/",
    response_model=EventPageOut,
    responses={k: ERRORS[k] for k in (401, 403, 422, 429)},
    summary="List events, newest first",
)
async def list_events(
    store: StoreDep,
    principal: ReaderDep,
    status_filter: Annotated[EventStatus | None, Query(alias="status")] = None,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> EventPageOut:
    """Your events newest first (admin: everyone's, with `owner`); `next_cursor` pages on."""
    page = await anyio.to_thread.run_sync(
        lambda: store.list_events(
            status=status_filter,
            event_type=event_type,
            limit=limit,
            cursor=cursor,
            owner=None if principal.admin else principal.owner,
            show_owner=principal.admin,
        )
    )
    return EventPageOut(items=page.items, next_cursor=page.next_cursor)


@router.get(
    "/{event_id}",
    response_model=EventRecord,
    responses={**READ_ERRORS, 404: {"description": "No event with this id"}},
    summary="Read an event's status and result",
)
async def read_event(key: EventKeyDep, store: StoreDep, webhooks: WebhooksDep) -> EventRecord:
    """The event's status, timestamps, attempts, queue position, result or error, webhooks."""
    record = await anyio.to_thread.run_sync(store.get, key)
    if webhooks.enabled:
        deliveries = await anyio.to_thread.run_sync(webhooks.for_event, key)
        record = record.model_copy(update={"webhooks": deliveries or None})
    return record


@router.get(
    "/{event_id}/transcript",
    responses={
        200: {
            "content": {m: {} for m in ["application/json", *MEDIA_TYPES.values()]},
            "description": "The transcript in the requested format",
        },
        **READ_ERRORS,
        404: {"description": "No event with this id"},
        409: {"description": "The event has no transcript (yet)"},
    },
    summary="Read a speech event's transcript as json, txt, srt or vtt",
)
async def read_transcript(
    key: EventKeyDep,
    store: StoreDep,
    format: Annotated[Literal["json", "txt", "srt", "vtt"], Query()] = "json",
) -> Response:
    """The transcript of a completed speech event, rendered in the requested format."""
    record = await anyio.to_thread.run_sync(store.get, key)
    raw = (record.result or {}).get("transcript")
    if raw is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"event {record.event_id!r} is {record.status} and has no transcript"
            + (" yet" if record.status in (EventStatus.QUEUED, EventStatus.PROCESSING) else ""),
        )
    transcript = Transcript.model_validate(raw)
    if format == "json":
        return Response(transcript.model_dump_json(), media_type="application/json")
    return PlainTextResponse(RENDERERS[format](transcript), media_type=MEDIA_TYPES[format])


knowledge_router = APIRouter()


class KnowledgeTable(BaseModel):
    name: str
    rows: int
    version: int
    indexes: list[dict[str, Any]]
    embedding_model: str
    columns: list[str]


@knowledge_router.get(
    "/tables",
    response_model=list[KnowledgeTable],
    responses={401: ERRORS[401]},
    summary="List knowledge tables",
)
async def list_knowledge_tables(runtime: RuntimeDep) -> list[KnowledgeTable]:
    """Tables with row counts, index state and the embedding model, to see what is searched."""
    described = await anyio.to_thread.run_sync(
        runtime.knowledge.describe, runtime.settings.embedding_model
    )
    return [KnowledgeTable.model_validate(table) for table in described]


# --- live results: WS /events/{event_id}/ws and GET /events/{event_id}/stream (SSE) ---
# Both send the same JSON messages (skyhigh.live.streams): first the event's current state (a
# `status` message shaped like GET /events/{id}), then `status`, `segment`, `transcript` and
# `matches` messages as they happen; the stream ends after the terminal `status`. They are on
# their own router, mounted without the router-wide bearer dependency: a browser cannot set
# headers on a WebSocket (it sends the token as a subprotocol), and a refused socket must be
# accepted and then closed with 1008, so that route reads its outcome itself
# (dependencies.websocket_auth; the edge middleware verified it).

live_router = APIRouter()

WS_NOT_FOUND = 4404  # application close code (4000-4999): no such event
WS_POLICY_VIOLATION = 1008  # RFC 6455: authentication failed

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "`event: <type>` + `data: <json>` per message; ends after the outcome",
    },
    **READ_ERRORS,
    404: {"description": "No event with this id"},
}


@live_router.get(
    "/{event_id}/stream",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
    dependencies=[Depends(require_events_read)],
    summary="Follow an event live (Server-Sent Events)",
)
async def stream_event(
    key: EventKeyDep,
    store: StoreDep,
    streams: StreamsDep,
    principal: ReaderDep,
    runtime: RuntimeDep,
) -> StreamingResponse:
    """The current state, then every status change, segment and match, then the outcome."""
    stack = AsyncExitStack()
    try:
        # MAX_STREAMS_PER_PRINCIPAL: QuotaExceeded (429) past it; freed when the stream ends.
        stack.enter_context(runtime.quotas.streams.hold(principal.owner))
        feed = await stack.enter_async_context(open_feed(streams, store, key))
    except BaseException:
        await stack.aclose()
        raise

    async def body() -> AsyncIterator[str]:
        async with stack:
            try:
                async for message in feed:
                    if message is None:
                        yield KEEPALIVE
                    else:
                        yield sse_event(message.data, event=message.type)
            except Lagged as exc:
                error = {"type": "error", "code": "lagging", "message": str(exc)}
                yield sse_event(json.dumps(error), event="error")

    return sse_response(body())


@live_router.websocket("/{event_id}/ws", name="stream_event_ws")
async def stream_event_ws(
    websocket: WebSocket,
    event_id: str,
    auth: WebSocketAuthDep,
    store: StoreDep,
    streams: StreamsDep,
    runtime: RuntimeDep,
    owner: OwnerQuery = None,
) -> None:
    """The same messages as the SSE stream, one JSON text frame each.

    Auth: `Authorization: Bearer <token>`, or from a browser the subprotocols
    `["bearer", "<token>"]` (the server selects "bearer"). A refused token is closed with 1008.
    """
    slots = runtime.quotas.streams
    if auth.principal is not None:
        try:
            slots.acquire(auth.principal.owner)
        except QuotaExceeded as exc:  # answered over HTTP, as for SSE: 429 + Retry-After
            denial = JSONResponse(
                {"detail": str(exc)},
                status_code=429,
                headers={"Retry-After": str(exc.retry_after_s)},
            )
            await websocket.send_denial_response(denial)
            return
        try:
            await _serve_ws(websocket, event_id, auth, store, streams, owner)
        finally:
            slots.release(auth.principal.owner)
    else:
        await _serve_ws(websocket, event_id, auth, store, streams, owner)


async def _serve_ws(
    websocket: WebSocket,
    event_id: str,
    auth: Authentication,
    store: EventStore,
    streams: StreamBroker,
    owner: str | None,
) -> None:
    # Accept first, then close with a code: a refused handshake reaches a browser only as 1006.
    await websocket.accept(subprotocol=auth.subprotocol)
    if auth.error is not None or auth.principal is None:
        await websocket.close(WS_POLICY_VIOLATION, reason=auth.error or "not authenticated")
        return
    try:
        auth.principal.require(Scope.EVENTS_READ, "reading events")
        key = resolve_event(auth.principal, event_id, owner)
    except Forbidden as exc:
        await websocket.close(WS_POLICY_VIOLATION, reason=str(exc))
        return
    except EventNotFound:
        await websocket.close(WS_NOT_FOUND, reason=f"no event {event_id!r}")
        return
    try:
        async with open_feed(streams, store, key) as feed:
            outcome = await pump_websocket(websocket, feed)
    except EventNotFound:
        outcome = (WS_NOT_FOUND, f"no event {event_id!r}")
    if outcome is not None and websocket.client_state.name == "CONNECTED":
        await websocket.close(outcome[0], reason=outcome[1])
