"""The /events API: EventSchema, the typed payloads per event type, and the handlers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any, Literal

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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from skyhigh.api.dependencies import (
    DispatcherDep,
    IntakeDep,
    PublisherDep,
    ServicesDep,
    SettingsDep,
    StoreDep,
    StreamsDep,
    WebhooksDep,
    WebSocketAuthDep,
    require_token,
)
from skyhigh.config import Settings
from skyhigh.domain.events import ErrorCode, EventRecord, EventStatus, StepFailed, Transcript
from skyhigh.domain.payloads import EVENT_TYPES, SpeechOptions, SpeechPayload
from skyhigh.intake.spool import body_sha256, new_spool_name, spool_speech, stored_form
from skyhigh.live.streams import Lagged, StreamMessage, open_feed
from skyhigh.observability.logs import request_id_var
from skyhigh.observability.metrics import EVENTS_ACCEPTED
from skyhigh.speech.audio import check_audio_url
from skyhigh.speech.subtitles import MEDIA_TYPES, RENDERERS
from skyhigh.store.events import EventConflict, EventNotFound, InvalidCursor, NewEvent
from skyhigh.webhooks.sender import check_callback_url

router = APIRouter()

EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN, min_length=1, max_length=128)]


class EventSchema(BaseModel):
    """An event to process. `event_data` is validated by the payload model of `event_type`."""

    event_id: EventId = Field(
        description="Your id for this event (1-128 of A-Z a-z 0-9 . _ : -); makes retries safe."
    )
    event_type: str = Field(description="One of: " + ", ".join(EVENT_TYPES))
    event_data: dict[str, Any] = Field(
        description="The payload; its schema depends on event_type (see the payload schemas). "
        "Any type may add `callback_url`: the finished event is POSTed there, signed.",
        json_schema_extra={
            "oneOf": [
                {"$ref": f"#/components/schemas/{t.payload.__name__}"} for t in EVENT_TYPES.values()
            ]
        },
    )


class Accepted(BaseModel):
    message: str = "Data received!"
    event_id: str
    status: EventStatus
    status_url: str


class EventPageOut(BaseModel):
    items: list[EventRecord]
    next_cursor: str | None


OPENAPI_EXAMPLES: dict[str, Any] = {
    name: {"summary": t.summary, "value": t.example} for name, t in EVENT_TYPES.items()
}

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    409: {"description": "The event_id was already used for a different body"},
    413: {"description": "Body or audio larger than the configured limit"},
    422: {"description": "The event or its payload is invalid; the message says what to fix"},
    503: {"description": "Too many pending events; retry after the Retry-After delay"},
}


def _payload_error(exc: ValidationError, *prefix: str) -> RequestValidationError:
    # Never echo `input` back: it may hold megabytes of base64 audio.
    errors = [
        {"type": e["type"], "loc": ("body", *prefix, *e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False)
    ]
    return RequestValidationError(errors)


def _intake_error(failure: StepFailed, field: str) -> Exception:
    if failure.code == ErrorCode.AUDIO_TOO_LARGE:
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=failure.message)
    return RequestValidationError(
        [{"type": failure.code, "loc": ("body", *field.split(".")), "msg": failure.message}]
    )


def _accepted(record: EventRecord, response: Response) -> Accepted:
    status_url = f"/events/{record.event_id}"
    response.headers["Location"] = status_url
    return Accepted(event_id=record.event_id, status=record.status, status_url=status_url)


def _queue_full(settings: Settings) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"too many pending events (MAX_PENDING_EVENTS={settings.max_pending_events}); "
        "retry later",
        headers={"Retry-After": str(settings.retry_after_s)},
    )


async def _store_new(
    new: NewEvent,
    spooled: Path | None,
    intake: IntakeDep,
    dispatcher: DispatcherDep,
    publisher: PublisherDep,
) -> EventRecord:
    """Store the event (durably, before we answer) and dispatch it; undo the spool on replay."""
    try:
        outcome = await intake.create(new)
    except BaseException:
        dispatcher.release()
        await _discard(spooled)
        raise
    if outcome.created:
        # Announced before dispatch, so no subscriber sees "processing" before "queued".
        queued = outcome.record.model_dump(mode="json")
        publisher.publish(new.event_id, {"type": "status", **queued})
        dispatcher.submit(new.event_id)
        EVENTS_ACCEPTED.labels(new.event_type).inc()
    else:
        dispatcher.release()
        await _discard(spooled)
    return outcome.record


async def _discard(spooled: Path | None) -> None:
    if spooled is not None:
        await anyio.to_thread.run_sync(lambda: spooled.unlink(missing_ok=True))


def _callback_url(event_data: dict[str, Any], settings: Settings) -> str | None:
    """`event_data.callback_url`, allowed on every event type; checked, or 422."""
    if "callback_url" not in event_data:
        return None
    try:
        return check_callback_url(event_data["callback_url"], settings)
    except StepFailed as failure:
        raise _intake_error(failure, "event_data.callback_url") from None


async def _schedule_webhooks(
    webhooks: WebhooksDep, event_id: str, callback_url: str | None
) -> None:
    # Also on replays: an intake that crashed between storing and scheduling is completed.
    if webhooks.targets(callback_url):
        await anyio.to_thread.run_sync(webhooks.schedule, event_id, callback_url)


async def _existing(store: StoreDep, event_id: str, digest: str) -> EventRecord | None:
    """An earlier event with this id: identical body → replay; different body → 409."""
    found = await anyio.to_thread.run_sync(store.lookup, event_id)
    if found is None:
        return None
    record, stored_digest = found
    if stored_digest != digest:
        raise EventConflict(event_id)
    return record


@router.post(
    "/",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=ERRORS,
    summary="Submit an event",
)
async def create_event(
    event: Annotated[EventSchema, Body(openapi_examples=OPENAPI_EXAMPLES)],
    response: Response,
    store: StoreDep,
    intake: IntakeDep,
    dispatcher: DispatcherDep,
    settings: SettingsDep,
    publisher: PublisherDep,
    webhooks: WebhooksDep,
) -> Accepted:
    """Validate and store an event, then process it in the background (202 Accepted)."""
    event_type = EVENT_TYPES.get(event.event_type)
    if event_type is None:
        supported = ", ".join(EVENT_TYPES)
        raise RequestValidationError(
            [
                {
                    "type": "unknown_event_type",
                    "loc": ("body", "event_type"),
                    "msg": f"unknown event_type {event.event_type!r}; supported types: {supported}",
                }
            ]
        )
    callback_url = _callback_url(event.event_data, settings)
    data = {key: value for key, value in event.event_data.items() if key != "callback_url"}
    try:
        payload = event_type.payload.model_validate(data)
    except ValidationError as exc:
        raise _payload_error(exc, "event_data") from None
    if isinstance(payload, SpeechPayload) and payload.audio_url is not None:
        try:
            check_audio_url(payload.audio_url, allowed_hosts=settings.audio_url_allowed_hosts)
        except StepFailed as failure:
            raise _intake_error(failure, "event_data.audio_url") from None

    spools_audio = isinstance(payload, SpeechPayload) and payload.audio_base64 is not None
    if spools_audio:  # megabytes of base64: hash it off the loop
        digest = await anyio.to_thread.run_sync(body_sha256, event.event_type, event.event_data)
    else:
        digest = body_sha256(event.event_type, event.event_data)
    reserved = dispatcher.reserve()
    if spools_audio or not reserved:
        # A replay is answered before spooling its audio again, and even when the queue is
        # full; for everything else the insert itself detects replays (one round trip).
        try:
            existing = await _existing(store, event.event_id, digest)
        except EventConflict:
            if reserved:
                dispatcher.release()
            raise _conflict(event.event_id) from None
        if existing is not None:
            if reserved:
                dispatcher.release()
            await _schedule_webhooks(webhooks, event.event_id, callback_url)
            return _accepted(existing, response)
    if not reserved:
        raise _queue_full(settings)
    stored = stored_form(payload)
    spooled: Path | None = None
    if isinstance(payload, SpeechPayload):
        try:
            stored = await anyio.to_thread.run_sync(
                lambda: spool_speech(
                    payload, settings.spool_dir, max_bytes=settings.max_audio_bytes
                )
            )
        except StepFailed as failure:
            dispatcher.release()
            raise _intake_error(failure, "event_data.audio_base64") from None
        if "audio_file" in stored:
            spooled = settings.spool_dir / stored["audio_file"]
    new = NewEvent(event.event_id, event.event_type, digest, stored, request_id_var.get())
    try:
        record = await _store_new(new, spooled, intake, dispatcher, publisher)
    except EventConflict:
        raise _conflict(event.event_id) from None
    await _schedule_webhooks(webhooks, event.event_id, callback_url)
    return _accepted(record, response)


def _conflict(event_id: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail=f"event_id {event_id!r} was already used with a different body; "
        "use a new event_id for a new event",
    )


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=ERRORS,
    summary="Submit a speech event as a multipart file upload",
)
async def upload_speech(
    response: Response,
    intake: IntakeDep,
    dispatcher: DispatcherDep,
    settings: SettingsDep,
    publisher: PublisherDep,
    webhooks: WebhooksDep,
    file: Annotated[UploadFile, File(description="Audio in any format ffmpeg reads")],
    event_id: Annotated[EventId, Form()],
    language: Annotated[str | None, Form()] = None,
    task: Annotated[Literal["transcribe", "translate"], Form()] = "transcribe",
    word_timestamps: Annotated[bool, Form()] = False,
    initial_prompt: Annotated[str | None, Form()] = None,
    lookup: Annotated[bool, Form()] = True,
    k: Annotated[int, Form()] = 5,
    table: Annotated[str | None, Form()] = None,
    callback_url: Annotated[str | None, Form()] = None,
) -> Accepted:
    """Same contract as POST /events/ with event_type `speech`, for curl -F users."""
    callback_url = _callback_url({"callback_url": callback_url} if callback_url else {}, settings)
    fields = {
        "language": language,
        "task": task,
        "word_timestamps": word_timestamps,
        "initial_prompt": initial_prompt,
        "lookup": lookup,
        "k": k,
        "table": table,
    }
    try:
        options = SpeechOptions.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise _payload_error(exc) from None
    if not dispatcher.reserve():
        raise _queue_full(settings)
    name = new_spool_name()
    spooled = settings.spool_dir / name
    try:
        audio_sha = await anyio.to_thread.run_sync(
            _copy_upload, file, spooled, settings.max_audio_bytes
        )
    except StepFailed as failure:
        dispatcher.release()
        await _discard(spooled)
        raise _intake_error(failure, "file") from None
    stored = {**options.model_dump(exclude_none=True), "audio_file": name}
    identity = {**options.model_dump(exclude_none=True), "audio_sha256": audio_sha}
    if callback_url is not None:
        identity["callback_url"] = callback_url
    digest = body_sha256("speech", identity)
    new = NewEvent(event_id, "speech", digest, stored, request_id_var.get())
    try:
        record = await _store_new(new, spooled, intake, dispatcher, publisher)
    except EventConflict:
        raise _conflict(event_id) from None
    await _schedule_webhooks(webhooks, event_id, callback_url)
    return _accepted(record, response)


def _copy_upload(upload: UploadFile, dest: Path, max_bytes: int) -> str:
    """Copy the (already disk-spooled) upload in chunks, hashing it and enforcing the cap."""
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    with dest.open("wb") as out:
        while chunk := upload.file.read(1024 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise StepFailed(
                    ErrorCode.AUDIO_TOO_LARGE,
                    f"audio is larger than MAX_AUDIO_BYTES ({max_bytes} bytes)",
                )
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise StepFailed(ErrorCode.EMPTY_AUDIO, "the uploaded file is empty")
    return digest.hexdigest()


@router.get(
    "/",
    response_model=EventPageOut,
    responses={401: ERRORS[401], 422: ERRORS[422]},
    summary="List events, newest first",
)
async def list_events(
    store: StoreDep,
    status_filter: Annotated[EventStatus | None, Query(alias="status")] = None,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> EventPageOut:
    """Events newest first; pass `next_cursor` as `cursor` to get the next page."""
    try:
        page = await anyio.to_thread.run_sync(
            lambda: store.list_events(
                status=status_filter, event_type=event_type, limit=limit, cursor=cursor
            )
        )
    except InvalidCursor:
        raise RequestValidationError(
            [
                {
                    "type": "invalid_cursor",
                    "loc": ("query", "cursor"),
                    "msg": "cursor is not one this server issued; start without a cursor",
                }
            ]
        ) from None
    return EventPageOut(items=page.items, next_cursor=page.next_cursor)


async def _get_record(store: StoreDep, event_id: str) -> EventRecord:
    try:
        return await anyio.to_thread.run_sync(store.get, event_id)
    except EventNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no event {event_id!r}") from None


@router.get(
    "/{event_id}",
    response_model=EventRecord,
    responses={401: ERRORS[401], 404: {"description": "No event with this id"}},
    summary="Read an event's status and result",
)
async def read_event(event_id: str, store: StoreDep, webhooks: WebhooksDep) -> EventRecord:
    """The event's status, timestamps, attempts, queue position, result or error, webhooks."""
    record = await _get_record(store, event_id)
    if webhooks.enabled:
        deliveries = await anyio.to_thread.run_sync(webhooks.for_event, event_id)
        record = record.model_copy(update={"webhooks": deliveries or None})
    return record


@router.get(
    "/{event_id}/transcript",
    responses={
        200: {
            "content": {m: {} for m in ["application/json", *MEDIA_TYPES.values()]},
            "description": "The transcript in the requested format",
        },
        401: ERRORS[401],
        404: {"description": "No event with this id"},
        409: {"description": "The event has no transcript (yet)"},
    },
    summary="Read a speech event's transcript as json, txt, srt or vtt",
)
async def read_transcript(
    event_id: str,
    store: StoreDep,
    format: Annotated[Literal["json", "txt", "srt", "vtt"], Query()] = "json",
) -> Response:
    """The transcript of a completed speech event, rendered in the requested format."""
    record = await _get_record(store, event_id)
    raw = (record.result or {}).get("transcript")
    if raw is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"event {event_id!r} is {record.status} and has no transcript"
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
async def list_knowledge_tables(services: ServicesDep) -> list[KnowledgeTable]:
    """Tables with row counts, index state and the embedding model, to see what is searched."""
    described = await anyio.to_thread.run_sync(
        services.knowledge.describe, services.settings.embedding_model
    )
    return [KnowledgeTable.model_validate(table) for table in described]


# --- live results: WS /events/{event_id}/ws and GET /events/{event_id}/stream (SSE) ---
# Both send the same JSON messages (skyhigh.live.streams): first the event's current state (a
# `status` message shaped like GET /events/{id}), then `status`, `segment`, `transcript` and
# `matches` messages as they happen; the stream ends after the terminal `status`. They are on
# their own router, mounted without the router-wide bearer dependency: a browser cannot set
# headers on a WebSocket, so that route authenticates itself (dependencies.websocket_auth).

live_router = APIRouter()

WS_NOT_FOUND = 4404  # application close code (4000-4999): no such event
WS_POLICY_VIOLATION = 1008  # RFC 6455: authentication failed
WS_TRY_AGAIN_LATER = 1013  # RFC 6455: the subscriber fell behind; reconnect

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "`event: <type>` + `data: <json>` per message; ends after the outcome",
    },
    401: {"description": "Missing or invalid bearer token"},
    404: {"description": "No event with this id"},
}


@live_router.get(
    "/{event_id}/stream",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
    dependencies=[Depends(require_token)],
    summary="Follow an event live (Server-Sent Events)",
)
async def stream_event(event_id: str, store: StoreDep, streams: StreamsDep) -> StreamingResponse:
    """The current state, then every status change, segment and match, then the outcome."""
    stack = AsyncExitStack()
    try:
        feed = await stack.enter_async_context(open_feed(streams, store, event_id))
    except EventNotFound:
        await stack.aclose()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no event {event_id!r}") from None

    async def body() -> AsyncIterator[str]:
        async with stack:
            try:
                async for message in feed:
                    # A comment line keeps proxies from closing a quiet stream.
                    yield ": keepalive\n\n" if message is None else _sse(message)
            except Lagged as exc:
                error = {"type": "error", "code": "lagging", "message": str(exc)}
                yield f"event: error\ndata: {json.dumps(error)}\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(message: StreamMessage) -> str:
    return f"event: {message.type}\ndata: {message.data}\n\n"


@live_router.websocket("/{event_id}/ws", name="stream_event_ws")
async def stream_event_ws(
    websocket: WebSocket,
    event_id: str,
    auth: WebSocketAuthDep,
    store: StoreDep,
    streams: StreamsDep,
) -> None:
    """The same messages as the SSE stream, one JSON text frame each.

    Auth: `Authorization: Bearer <token>`, or from a browser the subprotocols
    `["bearer", "<token>"]` (the server selects "bearer"). A refused token is closed with 1008.
    """
    # Accept first, then close with a code: a refused handshake reaches a browser only as 1006.
    await websocket.accept(subprotocol=auth.subprotocol)
    if auth.error is not None:
        await websocket.close(WS_POLICY_VIOLATION, reason=auth.error)
        return
    try:
        async with open_feed(streams, store, event_id) as feed:
            outcome = await _pump(websocket, feed)
    except EventNotFound:
        outcome = (WS_NOT_FOUND, f"no event {event_id!r}")
    if outcome is not None and websocket.client_state.name == "CONNECTED":
        await websocket.close(outcome[0], reason=outcome[1])


async def _pump(
    websocket: WebSocket, feed: AsyncIterator[StreamMessage | None]
) -> tuple[int, str] | None:
    """Send the feed; the close code and reason, or None when the client left first."""
    outcome: tuple[int, str] | None = None
    async with anyio.create_task_group() as tg:
        # Watch for the client leaving, so a quiet event does not keep a dead socket open.
        tg.start_soon(_cancel_on_disconnect, websocket, tg.cancel_scope)
        try:
            async for message in feed:
                if message is not None:
                    await websocket.send_text(message.data)
            outcome = (1000, "done")
        except Lagged:
            outcome = (WS_TRY_AGAIN_LATER, "subscriber fell behind; reconnect for the full state")
        except (WebSocketDisconnect, OSError):
            outcome = None
        tg.cancel_scope.cancel()
    return outcome


async def _cancel_on_disconnect(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say; anything they send is ignored
    except Exception:
        pass  # the socket is gone either way
    finally:
        scope.cancel()
