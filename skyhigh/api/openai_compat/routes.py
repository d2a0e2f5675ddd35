"""`POST /v1/audio/transcriptions`, `POST /v1/audio/translations`, `GET /v1/models[/{id}]`.

Each audio request is a durable `speech` event: accepted through `Intake.accept` (the same
limits and audio checks as `POST /events/upload`), its id in `X-Event-Id`, then awaited over
the live-results channel and rendered in OpenAI's shapes. A client that goes away leaves the
event running; it stays readable at `GET /events/{id}`. `Idempotency-Key` becomes the event id,
so a retried call answers from the same event instead of transcribing again; like every event
id it is scoped to the caller's principal (skyhigh.domain.tenancy), so two principals' keys never
meet.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from skyhigh.api.dependencies import IntakeDep, PrincipalDep, RuntimeDep, StoreDep, StreamsDep
from skyhigh.api.live import cancel_on_disconnect, sse_response
from skyhigh.api.openai_compat.answers import (
    delta_stream,
    segment_stream,
    shutting_down,
    transcript_of,
)
from skyhigh.api.openai_compat.diarized import (
    DIARIZE_MODEL,
    SpeakersDep,
    check_request,
    diarized_json,
    known_speakers,
)
from skyhigh.api.openai_compat.errors import OpenAIError
from skyhigh.api.openai_compat.follow import FeedClosed, follow
from skyhigh.api.openai_compat.formats import (
    ResponseFormat,
    Task,
    render,
)
from skyhigh.domain.echo import shown
from skyhigh.domain.events import EVENT_ID_PATTERN, EventRecord, EventStatus, Transcript
from skyhigh.domain.payloads import SpeechUpload
from skyhigh.domain.tenancy import Principal
from skyhigh.intake.service import Submission
from skyhigh.live.streams import StreamBroker
from skyhigh.processing.registry import UPLOAD_TYPE
from skyhigh.store.events import EventStore

router = APIRouter()

WHISPER_1 = "whisper-1"  # OpenAI's model name; here an alias for the configured WHISPER_MODEL
# Logged for a client that left before its answer (nginx's code); nobody receives it.
CLIENT_CLOSED_REQUEST = 499
_STARTED = int(time.time())  # `created` of the models: when this process began serving them

Granularity = Literal["segment", "word"]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid field, unknown model, or audio that cannot be transcribed"},
    401: {"description": "Missing or invalid bearer token"},
    403: {"description": "The credential lacks the events:write scope"},
    413: {"description": "Audio larger than MAX_AUDIO_BYTES"},
    422: {"description": "The Idempotency-Key was used for a different request"},
    429: {"description": "The principal's rate or audio quota is used up; see Retry-After"},
    500: {"description": "Transcription failed on the server"},
    503: {"description": "Too many pending events; retry after the Retry-After delay"},
}
AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The transcript in `response_format`; SSE when `stream=true`",
        "content": {
            "application/json": {},
            "text/plain": {},
            "text/vtt": {},
            "text/event-stream": {},
        },
    },
    **ERRORS,
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=EVENT_ID_PATTERN,  # the Idempotency-Key becomes the event_id
        description="Becomes the event id (1-128 of A-Z a-z 0-9 . _ : -): a retry with the same "
        "key and file answers from the same event",
    ),
]
AudioFile = Annotated[UploadFile, File(description="Audio in any format ffmpeg reads")]
ModelName = Annotated[
    str, Form(description="`whisper-1` or the loaded model's name", examples=[WHISPER_1])
]
Prompt = Annotated[str | None, Form(max_length=1000, description="Vocabulary hint")]
Temperature = Annotated[
    float,
    Form(
        ge=0,
        le=1,
        description="Only 0 (the default): decoding starts at 0 and rises on its own when the "
        "output looks wrong; other values are refused with 400 (see README)",
    ),
]
Format = Annotated[ResponseFormat, Form()]


@router.post(
    "/audio/transcriptions",
    response_class=Response,
    responses=AUDIO_RESPONSES,
    summary="Transcribe audio (OpenAI-compatible)",
)
async def create_transcription(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    intake: IntakeDep,
    store: StoreDep,
    streams: StreamsDep,
    file: AudioFile,
    model: ModelName,
    speakers: SpeakersDep,
    idempotency_key: IdempotencyKey = None,
    language: Annotated[str | None, Form(description="ISO 639-1; detected if absent")] = None,
    prompt: Prompt = None,
    temperature: Temperature = 0.0,
    response_format: Format = "json",
    timestamp_granularities: Annotated[
        list[Granularity] | None,
        Form(alias="timestamp_granularities[]", description="With verbose_json only"),
    ] = None,
    stream: Annotated[bool, Form(description="Server-Sent Events while decoding")] = False,
) -> Response:
    """Transcribe in the spoken language; stored as a `speech` event (id in `X-Event-Id`)."""
    _check_model(model, runtime.settings.whisper_model, diarize=True)
    _check_temperature(temperature)
    granularities = set(timestamp_granularities or ())
    diarize = check_request(
        speakers,
        model=model,
        response_format=response_format,
        prompt=prompt,
        granularities=granularities,
    )
    _check_format(response_format, granularities=granularities, stream=stream)
    options = _speech_options(
        task="transcribe",
        language=language,
        prompt=prompt,
        words="word" in granularities,
        speakers=known_speakers(speakers) if diarize else None,
    )
    key, record = await _accept(intake, principal, options, file, idempotency_key)
    headers = {"X-Event-Id": record.event_id}
    if stream and response_format == "diarized_json":
        return sse_response(segment_stream(streams, store, key), headers=headers)
    if stream:
        return sse_response(delta_stream(streams, store, key), headers=headers)
    transcript = await _outcome(request, streams, store, key, record)
    if transcript is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if response_format == "diarized_json":
        return JSONResponse(diarized_json(transcript), headers=headers)
    return render(
        transcript,
        response_format=response_format,
        task="transcribe",
        words="word" in granularities,
        headers=headers,
    )


@router.post(
    "/audio/translations",
    response_class=Response,
    responses=AUDIO_RESPONSES,
    summary="Translate audio into English (OpenAI-compatible)",
)
async def create_translation(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    intake: IntakeDep,
    store: StoreDep,
    streams: StreamsDep,
    file: AudioFile,
    model: ModelName,
    idempotency_key: IdempotencyKey = None,
    prompt: Prompt = None,
    temperature: Temperature = 0.0,
    response_format: Format = "json",
) -> Response:
    """Transcribe into English text; stored as a `speech` event with task `translate`."""
    _check_model(model, runtime.settings.whisper_model)
    _check_temperature(temperature)
    options = _speech_options(task="translate", language=None, prompt=prompt, words=False)
    key, record = await _accept(intake, principal, options, file, idempotency_key)
    transcript = await _outcome(request, streams, store, key, record)
    if transcript is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return render(
        transcript,
        response_format=response_format,
        task="translate",
        words=False,
        headers={"X-Event-Id": record.event_id},
    )


@router.get("/models", summary="List the models (OpenAI-compatible)", responses={401: ERRORS[401]})
async def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    """`whisper-1` (an alias), the loaded model and, while diarization is on,
    `gpt-4o-transcribe-diarize`, in OpenAI's list shape."""
    return {"object": "list", "data": [_model(name) for name in _served(runtime)]}


@router.get(
    "/models/{model_id}",
    summary="Describe one model (OpenAI-compatible)",
    responses={401: ERRORS[401], 404: {"description": "Not a model this server serves"}},
)
async def read_model(model_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One model in OpenAI's shape."""
    served = _served(runtime)
    if model_id not in served:
        raise OpenAIError(
            status.HTTP_404_NOT_FOUND,
            f"model {shown(model_id)} is not served here; the models are: {', '.join(served)}",
            param="model",
            code="model_not_found",
        )
    return _model(model_id)


# --------------------------------------------------------------------------- helpers


def _served(runtime: RuntimeDep) -> list[str]:
    settings = runtime.settings
    # The diarize model is the loaded Whisper model plus the speaker model: listed only where
    # the speaker model may run (DIARIZATION=false fails every diarized request).
    diarize = [DIARIZE_MODEL] if settings.diarization else []
    return [WHISPER_1, settings.whisper_model, *diarize]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "skyhigh"}


def _check_model(model: str, loaded: str, *, diarize: bool = False) -> None:
    served = (WHISPER_1, loaded, DIARIZE_MODEL) if diarize else (WHISPER_1, loaded)
    if model not in served:
        raise OpenAIError(
            status.HTTP_400_BAD_REQUEST,
            f"model {shown(model)} is not served here; use one of: {', '.join(served)}",
            param="model",
            code="model_not_found",
        )


def _check_format(response_format: str, *, granularities: set[Granularity], stream: bool) -> None:
    if granularities and response_format != "verbose_json":
        raise OpenAIError(
            status.HTTP_400_BAD_REQUEST,
            "timestamp_granularities[] needs response_format=verbose_json",
            param="timestamp_granularities[]",
            code="invalid_value",
        )
    if stream and response_format not in ("json", "text", "diarized_json"):
        raise OpenAIError(
            status.HTTP_400_BAD_REQUEST,
            "stream=true sends transcript.text.delta events (transcript.text.segment events "
            "with diarized_json); use response_format json, text or diarized_json",
            param="stream",
            code="invalid_value",
        )


def _check_temperature(temperature: float) -> None:
    # Refused rather than ignored: a client asking for sampling would silently get greedy
    # decoding. Whisper's own fallback (0 -> 0.2 -> ... when a window looks wrong) still runs.
    if temperature != 0:
        raise OpenAIError(
            status.HTTP_400_BAD_REQUEST,
            f"temperature {temperature} is not supported: decoding starts at 0 and raises the "
            "temperature by itself only where a window's output looks wrong; send 0 or leave "
            "temperature out",
            param="temperature",
            code="unsupported_value",
        )


def _speech_options(
    *,
    task: Task,
    language: str | None,
    prompt: str | None,
    words: bool,
    speakers: list[dict[str, str]] | None = None,
) -> SpeechUpload:
    try:
        # No knowledge lookup: an OpenAI client asked for a transcript only.
        return SpeechUpload.model_validate(
            {
                "task": task,
                "language": language,
                "initial_prompt": prompt,
                "word_timestamps": words,
                "lookup": False,
                "diarize": speakers is not None,
                "known_speakers": speakers or None,
            }
        )
    except ValidationError as exc:
        # Reported on the form field the client sent (`language`), as FastAPI would.
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


async def _accept(
    intake: IntakeDep,
    principal: Principal,
    options: SpeechUpload,
    file: UploadFile,
    idempotency_key: str | None,
) -> tuple[str, EventRecord]:
    """The stored key (to follow the event by) and the accepted event."""
    event_id = idempotency_key or f"oai-{uuid.uuid4().hex}"
    submission = Submission(
        principal, event_id, UPLOAD_TYPE.name, options, upload=file.file, fields=("body",)
    )
    return submission.key, await intake.accept(submission)


async def _outcome(
    request: Request, streams: StreamBroker, store: EventStore, key: str, record: EventRecord
) -> Transcript | None:
    """The finished event's transcript, awaited without holding a thread.

    None if the client disconnected first: waiting stops, the event itself goes on.
    """
    if record.status in (EventStatus.COMPLETED, EventStatus.FAILED):
        return transcript_of(record)  # a replay of a finished event
    finished: EventRecord | None = None
    failure: Exception | None = None

    async def await_outcome() -> None:
        nonlocal finished, failure
        try:
            async for update in follow(streams, store, key):
                if isinstance(update, EventRecord):
                    finished = update
        except FeedClosed:
            failure = shutting_down(record.event_id)
        except Exception as exc:  # raised below, outside the task group's ExceptionGroup
            failure = exc
        finally:
            tasks.cancel_scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(await_outcome)
        # The body has been read: the next ASGI message is the client leaving.
        tasks.start_soon(cancel_on_disconnect, request.receive, tasks.cancel_scope)
    if failure is not None:
        raise failure
    return None if finished is None else transcript_of(finished)
