"""Typed payloads of each event type, with the examples shown in the OpenAPI docs.

They live in the package (not in endpoint.py) because the workers validate stored
payloads with the same models the API accepted them with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

TABLE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

TableName = Annotated[str, StringConstraints(pattern=TABLE_NAME)]
FilterScalar = str | int | float | bool
FilterValue = FilterScalar | list[FilterScalar]


def _check_filter(value: dict[str, FilterValue] | None) -> dict[str, FilterValue] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("filter may name at most 16 columns")
    for column, operand in value.items():
        if not COLUMN_NAME.match(column):
            raise ValueError(f"filter column {column!r} is not a plain column name")
        if isinstance(operand, list) and not 1 <= len(operand) <= 100:
            raise ValueError(f"filter list for {column!r} must hold 1 to 100 values")
    return value


class LookupOptions(BaseModel):
    """Knowledge-base lookup knobs shared by `query` and `speech` events."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=5, ge=1, le=50, description="How many matches to return.")
    table: TableName | None = Field(
        default=None, description="LanceDB table to search (default: the demo knowledge table)."
    )
    filter: dict[str, FilterValue] | None = Field(
        default=None,
        description=(
            'Equality filter on metadata columns, e.g. {"category": "baggage"}. A list '
            "matches any of its values; on a list column (tags) it matches rows holding the value."
        ),
    )

    _filter = field_validator("filter")(_check_filter)


class QueryPayload(LookupOptions):
    """Search the knowledge base for passages related to `text`."""

    text: str = Field(min_length=1, max_length=2000, description="The question or passage.")


class SpeechOptions(LookupOptions):
    """Everything about a speech event except where its audio comes from."""

    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")] | None = (
        Field(default=None, description="ISO 639-1 code; detected when absent.")
    )
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    initial_prompt: str | None = Field(default=None, max_length=1000)
    lookup: bool = Field(default=True, description="Search the knowledge base with the transcript.")


class SpeechPayload(SpeechOptions):
    """Transcribe audio with Whisper, then look the transcript up in the knowledge base."""

    audio_base64: str | None = Field(
        default=None,
        description="Base64 audio (any format ffmpeg reads) or a data:audio/...;base64, URL.",
    )
    audio_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL to fetch; only hosts listed in AUDIO_URL_ALLOWED_HOSTS.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SpeechPayload:
        if (self.audio_base64 is None) == (self.audio_url is None):
            raise ValueError("give exactly one of audio_base64 or audio_url")
        return self


class SpeechJob(SpeechOptions):
    """A speech event as stored: the audio already spooled to a file, or a URL to fetch."""

    audio_file: str | None = None
    audio_url: str | None = None


QUERY_EXAMPLE: dict[str, Any] = {
    "event_id": "3f1c2a9e-query-example",
    "event_type": "query",
    "event_data": {"text": "How many checked bags are free on a Classic fare?", "k": 3},
}

SPEECH_EXAMPLE: dict[str, Any] = {
    "event_id": "8b7e55d0-speech-example",
    "event_type": "speech",
    "event_data": {
        "audio_base64": "data:audio/wav;base64,"
        "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA=",
        "language": "en",
        "lookup": True,
        "k": 3,
    },
}


@dataclass(frozen=True)
class EventType:
    """One entry of the event-type registry: how the API validates and documents it."""

    name: str
    payload: type[BaseModel]
    summary: str
    example: dict[str, Any]


# Adding an event type: a payload model here, a handler in pipeline.Pipeline.handlers.
EVENT_TYPES: dict[str, EventType] = {
    "query": EventType("query", QueryPayload, "Search the knowledge base", QUERY_EXAMPLE),
    "speech": EventType("speech", SpeechPayload, "Transcribe audio, then search", SPEECH_EXAMPLE),
}
