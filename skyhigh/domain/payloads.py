"""Typed payloads of each event type, with the examples shown in the OpenAPI docs.

They live in the package (not in endpoint.py) because the workers validate stored
payloads with the same models the API accepted them with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from skyhigh.domain.echo import shown

TABLE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Document metadata keys become table columns: short, lower case, one spelling per name (no
# `Category` next to `category`). The number of columns is capped per table as well
# (KNOWLEDGE_MAX_METADATA_COLUMNS, skyhigh.knowledge.documents).
METADATA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# Whisper's language codes (whisper.tokenizer.LANGUAGES; a test keeps them in sync).
WHISPER_LANGUAGES = frozenset(
    (
        "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
        "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
        "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
        "th tk tl tr tt uk ur uz vi yi yo yue zh "
    ).split()
)

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
            raise ValueError(f"filter column {shown(column)} is not a plain column name")
        if isinstance(operand, list) and not 1 <= len(operand) <= 100:
            raise ValueError(f"filter list for {column!r} must hold 1 to 100 values")
    return value


class EventPayload(BaseModel):
    """What every event type's `event_data` may carry besides its own fields."""

    model_config = ConfigDict(extra="forbid")

    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POST the finished event here, signed (needs WEBHOOK_SECRET on the server).",
    )


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

    mode: Literal["vector", "fulltext", "hybrid"] = Field(
        default="vector",
        description="vector (semantic), fulltext (BM25 keywords) or hybrid (both, RRF-fused).",
    )
    min_score: float | None = Field(
        default=None,
        description="Drop matches scoring below this (cosine for vector, BM25 for fulltext, "
        "RRF for hybrid).",
    )

    _filter = field_validator("filter")(_check_filter)


class QueryPayload(LookupOptions, EventPayload):
    """Search the knowledge base for passages related to `text`."""

    text: str = Field(min_length=1, max_length=2000, description="The question or passage.")


# Known speakers per event and the size of each reference clip: a few seconds of voice suffice,
# and the clips travel inside the stored payload.
MAX_KNOWN_SPEAKERS = 8
MAX_REFERENCE_BASE64 = 2_800_000  # ~2 MB decoded
SPEAKER_NAME = r"^[^\x00-\x1f<>&]{1,64}$"  # shown in WebVTT voice tags: no markup, no controls


class KnownSpeakerRef(BaseModel):
    """A speaker to name in a diarized transcript, with a short clip of their voice."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=SPEAKER_NAME, strip_whitespace=True)] = Field(
        description="The label their segments get (1-64 characters, no <, > or &)."
    )
    audio_base64: str | None = Field(
        default=None,
        max_length=MAX_REFERENCE_BASE64,
        description="2-30 s of their voice alone: base64 or a data:audio/...;base64, URL.",
    )
    audio_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL of the clip; only hosts listed in AUDIO_URL_ALLOWED_HOSTS.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> KnownSpeakerRef:
        if (self.audio_base64 is None) == (self.audio_url is None):
            raise ValueError(
                f"known speaker {self.name!r}: give exactly one of audio_base64 or audio_url"
            )
        if self.audio_base64 is not None:
            _check_base64(self.audio_base64, self.name)
        return self


def _check_base64(value: str, name: str) -> None:
    data = value.strip()
    if data[:5].lower() == "data:":
        header, comma, data = data.partition(",")
        if not comma or not header.lower().endswith(";base64"):
            raise ValueError(f"known speaker {name!r}: malformed data URL (data:audio/...;base64,)")
    try:
        decoded = base64.b64decode("".join(data.split()), validate=True)
    except ValueError:
        raise ValueError(f"known speaker {name!r}: audio_base64 is not valid base64") from None
    if not decoded:
        raise ValueError(f"known speaker {name!r}: audio_base64 is empty")


class SpeechOptions(LookupOptions):
    """Everything about a speech event except where its audio comes from."""

    language: str | None = Field(
        default=None, description="ISO 639-1 code (as Whisper knows it); detected when absent."
    )
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    initial_prompt: str | None = Field(default=None, max_length=1000)
    lookup: bool = Field(default=True, description="Search the knowledge base with the transcript.")
    index_transcript: bool = Field(
        default=False, description="Store the transcript in the transcripts table for search."
    )
    diarize: bool = Field(
        default=False, description="Label who spoke when: `speaker` on segments and words."
    )
    num_speakers: int | None = Field(
        default=None, ge=1, le=32, description="Exact count, if known."
    )
    min_speakers: int | None = Field(default=None, ge=1, le=32)
    max_speakers: int | None = Field(default=None, ge=1, le=32)
    known_speakers: list[KnownSpeakerRef] | None = Field(
        default=None,
        max_length=MAX_KNOWN_SPEAKERS,
        description="Speakers to name by a reference clip; unmatched voices keep SPEAKER_00, ...",
    )

    @field_validator("known_speakers", mode="before")
    @classmethod
    def _json_in_form(cls, value: Any) -> Any:
        # A multipart form carries each known speaker (or the whole list) as a JSON string.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            parsed: list[Any] = []
            for item in value:
                loaded = _json_field(item) if isinstance(item, str) else item
                parsed.extend(loaded if isinstance(loaded, list) else [loaded])
            return parsed
        return value

    @model_validator(mode="after")
    def _diarization_fields(self) -> SpeechOptions:
        asked = [
            name
            for name in ("num_speakers", "min_speakers", "max_speakers", "known_speakers")
            if getattr(self, name)
        ]
        if asked and not self.diarize:
            raise ValueError(f"{', '.join(asked)} need diarize: true")
        low, high = self.min_speakers, self.max_speakers
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_speakers ({low}) is above max_speakers ({high})")
        count = self.num_speakers
        if count is not None and (low is not None or high is not None):
            raise ValueError("give num_speakers or min_speakers/max_speakers, not both")
        names = [known.name for known in self.known_speakers or ()]
        if len(set(names)) != len(names):
            raise ValueError("known_speakers names must differ")
        return self

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.lower()
        if code not in WHISPER_LANGUAGES:
            raise ValueError(
                f"unknown language {shown(value)}; use an ISO 639-1 code such as en, de, fr"
            )
        return code


def _json_field(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ValueError(
            'known_speakers in a form must be JSON: {"name": ..., "audio_base64": ...}'
        ) from None


class SpeechPayload(SpeechOptions, EventPayload):
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


class SpeechUpload(SpeechOptions, EventPayload):
    """A speech event whose audio arrives as a multipart file (`/events/upload`)."""


DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$"
# The one list of the columns every document row has besides its metadata: the knowledge
# tables (skyhigh.knowledge.tables), the rows (skyhigh.knowledge.documents) and the writer's
# metadata columns all start from it. It lives here because validation below needs it.
DOCUMENT_COLUMNS = ("id", "document_id", "chunk", "title", "text", "content_sha256", "vector")
# The demo table's list column: metadata values are scalars, so a key cannot reuse its name.
LIST_COLUMNS = ("tags",)
RESERVED_METADATA = frozenset(DOCUMENT_COLUMNS + LIST_COLUMNS)


class DocumentPayload(EventPayload):
    """Add or replace a document in the knowledge base: chunked, embedded, upserted."""

    document_id: Annotated[str, StringConstraints(pattern=DOCUMENT_ID_PATTERN)] | None = Field(
        default=None,
        description="Your id; re-sending it replaces the document. Generated if absent.",
    )
    title: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1, max_length=100_000)
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Flat metadata; each key becomes a filterable column (e.g. category).",
    )
    table: TableName | None = Field(default=None, description="Target table (default: knowledge).")

    @field_validator("metadata")
    @classmethod
    def _flat_metadata(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        if len(value) > 32:
            raise ValueError("metadata may hold at most 32 keys")
        for key, item in value.items():
            if not METADATA_KEY.match(key) or key in RESERVED_METADATA:
                raise ValueError(
                    f"metadata key {shown(key)} must be an identifier matching "
                    f"{METADATA_KEY.pattern} and not one of "
                    f"{', '.join(sorted(RESERVED_METADATA))}"
                )
            if isinstance(item, str) and len(item) > 2000:
                raise ValueError(f"metadata {key!r} is longer than 2000 characters")
        return value


def document_sha256(document: DocumentPayload) -> str:
    """Fingerprint of a document's content, so bulk ingestion can skip unchanged documents."""
    canonical = json.dumps(
        {"title": document.title, "text": document.text, "metadata": document.metadata},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class DocumentDeletePayload(EventPayload):
    """Remove a document (all its chunks) from the knowledge base."""

    document_id: Annotated[str, StringConstraints(pattern=DOCUMENT_ID_PATTERN)]
    table: TableName | None = None


class SpeechJob(SpeechOptions):
    """A speech event as stored: the audio already spooled to a file, or a URL to fetch."""

    audio_file: str | None = None
    audio_url: str | None = None
    # Audio seconds reserved at intake, settled when the event ends (skyhigh.intake.quotas).
    audio_hold: dict[str, float] | None = None
    # Charged while it streamed (a realtime session): the worker does not charge it again.
    audio_charged: bool = False


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


DOCUMENT_EXAMPLE: dict[str, Any] = {
    "event_id": "5d2c0f1a-document-example",
    "event_type": "document",
    "event_data": {
        "document_id": "policy-lounge-access",
        "title": "Lounge access for Gold members",
        "text": "SkyMiles Gold members may use partner lounges with one guest. ...",
        "metadata": {"category": "loyalty", "source": "intranet"},
    },
}

DOCUMENT_DELETE_EXAMPLE: dict[str, Any] = {
    "event_id": "5d2c0f1a-delete-example",
    "event_type": "document_delete",
    "event_data": {"document_id": "policy-lounge-access"},
}
