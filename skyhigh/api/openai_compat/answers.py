"""A finished transcription event as OpenAI's answers: the transcript or its error, and the
SSE streams (`transcript.text.delta` while decoding, or diarized `transcript.text.segment`s).

Errors after a stream started travel as an SSE `{"error": {...}}`, which the SDKs raise as
APIError. A client that disconnects ends a stream; the event goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import status

from skyhigh.api.live import KEEPALIVE
from skyhigh.api.openai_compat.diarized import segment_events
from skyhigh.api.openai_compat.errors import OpenAIError, from_failed_event
from skyhigh.api.openai_compat.follow import FeedClosed, follow
from skyhigh.api.openai_compat.formats import delta_event, done_event, sse
from skyhigh.domain.events import EventRecord, Segment, Transcript
from skyhigh.domain.tenancy import public_event_id
from skyhigh.live.streams import StreamBroker
from skyhigh.store.events import EventStore


def shutting_down(event_id: str) -> OpenAIError:
    return OpenAIError(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the server is shutting down; the event goes on: GET /events/{event_id}",
        code="shutting_down",
    )


def transcript_of(record: EventRecord) -> Transcript:
    if record.error is not None:
        raise from_failed_event(record.error, event_id=record.event_id)
    raw = (record.result or {}).get("transcript")
    if raw is None:
        raise OpenAIError(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            f"event {record.event_id!r} finished without a transcript",
            code="internal_error",
        )
    return Transcript.model_validate(raw)


async def segment_stream(streams: StreamBroker, store: EventStore, key: str) -> AsyncIterator[str]:
    """Diarized: speakers are known once the whole clip is heard, so the segment events
    follow the finished event (keep-alives until then)."""
    try:
        async for update in follow(streams, store, key):
            if update is None:
                yield KEEPALIVE
            elif isinstance(update, EventRecord):
                for event in segment_events(transcript_of(update)):
                    yield event
    except OpenAIError as exc:
        yield sse(exc.body())
    except FeedClosed:
        yield sse(shutting_down(public_event_id(key)).body())


async def delta_stream(streams: StreamBroker, store: EventStore, key: str) -> AsyncIterator[str]:
    """`transcript.text.delta` per decoded segment, then `transcript.text.done`.

    Errors after the response started travel as an SSE `{"error": {...}}`, which the SDKs raise
    as APIError. A client that disconnects ends this generator; the event goes on.
    """
    sent: set[int] = set()
    first = True

    def delta(segment: Segment) -> str:
        nonlocal first
        sent.add(segment.id)
        text = segment.text.lstrip() if first else segment.text
        first = False
        return delta_event(text)

    try:
        async for update in follow(streams, store, key):
            if update is None:
                yield KEEPALIVE
            elif isinstance(update, Segment):
                yield delta(update)
            else:
                transcript = transcript_of(update)
                # A replayed or late-joined event: the segments not yet sent, from the result.
                for segment in transcript.segments:
                    if segment.id not in sent:
                        yield delta(segment)
                yield done_event(transcript.text)
    except OpenAIError as exc:
        yield sse(exc.body())
    except FeedClosed:
        yield sse(shutting_down(public_event_id(key)).body())
