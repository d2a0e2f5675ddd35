"""The event types, registered once: name → payload model, handler, docs.

Adding a type is one entry here (plus its payload model in skyhigh.domain.payloads and its
handler in skyhigh.processing.handlers): the API's `EventSchema` union, its OpenAPI schema, the
unknown-type error and the pipeline's dispatch all read this registry.
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


@dataclass(frozen=True)
class EventType:
    """One event type: how the API validates and documents it, and what processes it."""

    name: str
    payload: type[EventPayload]
    handler: Handler
    summary: str
    example: dict[str, Any]


EVENT_TYPES: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("query", QueryPayload, run_query, "Search the knowledge base", QUERY_EXAMPLE),
        EventType(
            "speech", SpeechPayload, run_speech, "Transcribe audio, then search", SPEECH_EXAMPLE
        ),
        EventType(
            "document", DocumentPayload, run_document, "Add or replace a document", DOCUMENT_EXAMPLE
        ),
        EventType(
            "document_delete",
            DocumentDeletePayload,
            run_document_delete,
            "Delete a document",
            DOCUMENT_DELETE_EXAMPLE,
        ),
    )
}
