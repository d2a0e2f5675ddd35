"""The event types, registered once: name → payload model, handler, docs, and the facts about it.

Adding a type is one entry here (plus its payload model in skyhigh.domain.payloads and its
handler in skyhigh.processing.handlers): the API's `EventSchema` union, its OpenAPI schema, the
unknown-type error, the pipeline's dispatch, intake's permission and quota checks, the JSON
body limit and Celery's queue routing all read this registry. Nothing tests a type by its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skyhigh.domain.payloads import (
    DOCUMENT_DELETE_EXAMPLE,
    DOCUMENT_EXAMPLE,
    QUERY_EXAMPLE,
    SPEECH_EXAMPLE,
    DocumentDeletePayload,
    DocumentPayload,
    EventPayload,
    QueryPayload,
    SpeechPayload,
)
from skyhigh.processing.handlers import (
    Job,
    run_document,
    run_document_delete,
    run_query,
    run_speech,
)

Handler = Callable[[dict[str, Any], Job], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class EventType:
    """One event type: how the API validates and documents it, what processes it, and what it
    does that the rest of the service must know.

    - `writes_knowledge`: it writes the shared knowledge base. The submitter needs the
      `knowledge:write` scope, and in scale mode it runs on the `knowledge` queue, which one
      worker process consumes (one writer per LanceDB table).
    - `carries_audio`: its body may hold base64 audio (larger than MAX_JSON_BODY_BYTES, up to
      MAX_BODY_BYTES), it counts against the audio quota, and `/events/upload` creates it.
    """

    name: str
    payload: type[EventPayload]
    handler: Handler
    summary: str
    example: dict[str, Any]
    writes_knowledge: bool = False
    carries_audio: bool = False


QUERY = EventType(
    name="query",
    payload=QueryPayload,
    handler=run_query,
    summary="Search the knowledge base",
    example=QUERY_EXAMPLE,
)
SPEECH = EventType(
    name="speech",
    payload=SpeechPayload,
    handler=run_speech,
    summary="Transcribe audio, then search",
    example=SPEECH_EXAMPLE,
    carries_audio=True,
)
DOCUMENT = EventType(
    name="document",
    payload=DocumentPayload,
    handler=run_document,
    summary="Add or replace a document",
    example=DOCUMENT_EXAMPLE,
    writes_knowledge=True,
)
DOCUMENT_DELETE = EventType(
    name="document_delete",
    payload=DocumentDeletePayload,
    handler=run_document_delete,
    summary="Delete a document",
    example=DOCUMENT_DELETE_EXAMPLE,
    writes_knowledge=True,
)

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in (QUERY, SPEECH, DOCUMENT, DOCUMENT_DELETE)}
# The types with each fact, for the places that take a set of names.
KNOWLEDGE_WRITING_TYPES = frozenset(t.name for t in EVENT_TYPES.values() if t.writes_knowledge)
AUDIO_TYPES = frozenset(t.name for t in EVENT_TYPES.values() if t.carries_audio)
# What `/events/upload` creates: the one type whose audio may arrive as a file.
(UPLOAD_TYPE,) = (t for t in EVENT_TYPES.values() if t.carries_audio)


def writes_knowledge(event_type: str) -> bool:
    return event_type in KNOWLEDGE_WRITING_TYPES


def carries_audio(event_type: str) -> bool:
    return event_type in AUDIO_TYPES
