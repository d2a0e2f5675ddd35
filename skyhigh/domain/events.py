"""Domain types shared by the API and the workers: statuses, records, results, error codes."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class EventStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({EventStatus.COMPLETED, EventStatus.FAILED})

# What a client may use as an event_id (and so as an Idempotency-Key on /v1/audio/*): no `~`,
# which skyhigh.domain.tenancy uses to keep one owner's ids apart from another's.
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class ErrorCode(enum.StrEnum):
    """Stable codes a failed event carries in `error.code` (documented in the README)."""

    INTERNAL_ERROR = "internal_error"
    MAX_ATTEMPTS = "max_attempts"
    TABLE_NOT_FOUND = "table_not_found"
    INVALID_FILTER = "invalid_filter"
    INVALID_QUERY = "invalid_query"
    INVALID_METADATA = "invalid_metadata"
    METADATA_COLUMN_LIMIT = "metadata_column_limit"
    TABLE_NOT_WRITABLE = "table_not_writable"
    INVALID_BASE64 = "invalid_base64"
    UNSUPPORTED_AUDIO = "unsupported_audio"
    EMPTY_AUDIO = "empty_audio"
    AUDIO_TOO_LARGE = "audio_too_large"
    AUDIO_TOO_LONG = "audio_too_long"
    URL_NOT_ALLOWED = "url_not_allowed"
    URL_FETCH_FAILED = "url_fetch_failed"


class EventError(BaseModel):
    code: str
    message: str


class StepFailed(Exception):
    """A pipeline step failed for a reason the client should see (stable code + message)."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


def _unset(value: object) -> bool:
    return value is None


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float
    # Who said it, on diarized transcripts only (left out of the output otherwise).
    speaker: str | None = Field(default=None, exclude_if=_unset)


class Segment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: list[Word] | None = None
    # Decoder details OpenAI's verbose_json reports, for engines that fill them in. Left out of
    # the output while unset, so stored results and /events answers keep their shape.
    seek: int | None = Field(default=None, exclude_if=_unset)
    tokens: list[int] | None = Field(default=None, exclude_if=_unset)
    temperature: float | None = Field(default=None, exclude_if=_unset)
    compression_ratio: float | None = Field(default=None, exclude_if=_unset)
    speaker: str | None = Field(default=None, exclude_if=_unset)  # diarized transcripts only


class SpeakerTalk(BaseModel):
    """One speaker of a diarized transcript: a known speaker's name or SPEAKER_00, ..."""

    speaker: str
    talk_time_s: float
    known: bool = False


class Transcript(BaseModel):
    text: str
    language: str
    language_probability: float | None = None
    duration_s: float
    segments: list[Segment] = Field(default_factory=list)
    # Diarized transcripts only: the speakers in order of first appearance.
    speakers: list[SpeakerTalk] | None = Field(default=None, exclude_if=_unset)


class Match(BaseModel):
    id: str
    title: str
    text: str
    score: float
    table: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class WebhookAttempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: float


class WebhookDelivery(BaseModel):
    """One webhook target of an event and how delivering to it went (skyhigh.webhooks.sender)."""

    id: str = Field(description="The webhook-id header: the same on every attempt")
    url: str = Field(description="The target, without query string or credentials")
    status: str = Field(description="scheduled, pending, delivered or failed")
    attempts: int
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None
    history: list[WebhookAttempt] = Field(default_factory=list)


class EventRecord(BaseModel):
    """One stored event as the API shows it."""

    event_id: str
    event_type: str
    status: EventStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    queue_position: int | None = None
    result: dict[str, Any] | None = None
    error: EventError | None = None
    webhooks: list[WebhookDelivery] | None = Field(
        default=None, description="Webhook deliveries, when the event has targets"
    )
    owner: str | None = Field(
        default=None,
        exclude_if=_unset,
        description="The principal that submitted the event (in admin listings only)",
    )
