"""Diarization on `/v1/audio/transcriptions`, as OpenAI's `gpt-4o-transcribe-diarize` does it.

A request diarizes when its model is `gpt-4o-transcribe-diarize` (served by the loaded Whisper
model plus the speaker model) or when it sends `diarize=true` (a SkyHigh extension, any model).
`response_format=diarized_json` answers `{text, duration, task, segments: [{id, type:
"transcript.text.segment", start, end, speaker, text}]}`; `known_speaker_names[]` with
`known_speaker_references[]` (data URLs) name speakers; `chunking_strategy` (`auto` or a
`server_vad` object) is accepted and validated: the service always chunks by VAD. The
combinations OpenAI refuses are refused here with its 400s (see `check_request`).
"""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Form, Request, status

from skyhigh.api.openai_compat.errors import OpenAIError
from skyhigh.api.openai_compat.formats import sse
from skyhigh.domain.events import Segment, Transcript

DIARIZE_MODEL: Final = "gpt-4o-transcribe-diarize"
# OpenAI's limit on known speakers per request (the events API allows more).
MAX_KNOWN_SPEAKERS: Final = 4
# The formats OpenAI serves for its diarization model; `diarize=true` on a Whisper model
# allows every format (srt and vtt then carry the speakers).
DIARIZE_MODEL_FORMATS: Final = ("json", "text", "diarized_json")
_VAD_FIELDS: Final = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms"}


@dataclass(frozen=True)
class DiarizeFields:
    """The diarization fields of one transcription request, as the client sent them."""

    diarize: bool
    names: list[str]
    references: list[str]
    chunking_strategy: str | None


async def diarize_fields(
    request: Request,
    diarize: Annotated[
        bool, Form(description="SkyHigh extension: label speakers with any model")
    ] = False,
    known_speaker_names: Annotated[
        list[str] | None,
        Form(alias="known_speaker_names[]", description="Up to 4 names, one per reference"),
    ] = None,
    known_speaker_references: Annotated[
        list[str] | None,
        Form(
            alias="known_speaker_references[]",
            description="data:audio/...;base64, URLs, 2-10 s of each named speaker alone",
        ),
    ] = None,
    chunking_strategy: Annotated[
        str | None, Form(description='"auto" or a server_vad object (JSON)')
    ] = None,
) -> DiarizeFields:
    # The SDKs send a chunking_strategy object as `chunking_strategy[type]=server_vad`, ...
    form = await request.form()
    nested = {
        key[len("chunking_strategy[") : -1]: value
        for key, value in form.multi_items()
        if key.startswith("chunking_strategy[") and key.endswith("]") and isinstance(value, str)
    }
    if nested:
        chunking_strategy = json.dumps(nested)
    return DiarizeFields(
        diarize,
        list(known_speaker_names or ()),
        list(known_speaker_references or ()),
        chunking_strategy,
    )


SpeakersDep = Annotated[DiarizeFields, Depends(diarize_fields)]


def check_request(
    fields: DiarizeFields,
    *,
    model: str,
    response_format: str,
    prompt: str | None,
    granularities: AbstractSet[str],
) -> bool:
    """Whether the request diarizes; OpenAI's 400 for a combination it refuses."""
    by_model = model == DIARIZE_MODEL
    diarizing = by_model or fields.diarize
    if response_format == "diarized_json" and not diarizing:
        _refuse(
            f"response_format 'diarized_json' needs model {DIARIZE_MODEL} (or diarize=true)",
            "response_format",
        )
    if by_model and response_format not in DIARIZE_MODEL_FORMATS:
        _refuse(
            f"response_format '{response_format}' is not compatible with model {DIARIZE_MODEL}; "
            f"use one of: {', '.join(DIARIZE_MODEL_FORMATS)}",
            "response_format",
        )
    if diarizing and prompt is not None:
        _refuse("Prompt is not supported for diarization models", "prompt")
    if diarizing and granularities:
        _refuse(
            "timestamp_granularities[] is not supported with diarization; use "
            "response_format=diarized_json for speaker segments",
            "timestamp_granularities[]",
        )
    _check_known(fields, diarizing)
    _check_chunking(fields.chunking_strategy)
    return diarizing


def known_speakers(fields: DiarizeFields) -> list[dict[str, str]]:
    """The events API's `known_speakers` for the names and references sent."""
    return [
        {"name": name, "audio_base64": reference}
        for name, reference in zip(fields.names, fields.references, strict=True)
    ]


def _check_known(fields: DiarizeFields, diarizing: bool) -> None:
    names, references = fields.names, fields.references
    if (names or references) and not diarizing:
        _refuse(
            f"known_speaker_names[] and known_speaker_references[] need model {DIARIZE_MODEL} "
            "(or diarize=true)",
            "known_speaker_names[]",
        )
    if len(names) != len(references):
        _refuse(
            f"known_speaker_names[] has {len(names)} entries and known_speaker_references[] "
            f"{len(references)}; send one reference per name",
            "known_speaker_references[]",
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        _refuse(
            f"at most {MAX_KNOWN_SPEAKERS} known speakers are supported", "known_speaker_names[]"
        )
    for reference in references:
        head = reference[:200].lower()
        if not head.startswith("data:audio/") or ";base64," not in head:
            _refuse(
                "each known_speaker_references[] entry must be a data URL: "
                "data:audio/<type>;base64,<data>",
                "known_speaker_references[]",
            )


def _check_chunking(value: str | None) -> None:
    if value is None or value == "auto":
        return
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    fine = (
        isinstance(parsed, dict)
        and parsed.get("type") == "server_vad"
        and set(parsed) <= _VAD_FIELDS
        and all(_number(parsed[key]) is not None for key in set(parsed) - {"type"})
    )
    if not fine:
        _refuse(
            'chunking_strategy must be "auto" or {"type": "server_vad", "threshold": ..., '
            '"prefix_padding_ms": ..., "silence_duration_ms": ...}',
            "chunking_strategy",
        )


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _refuse(message: str, param: str) -> None:
    raise OpenAIError(status.HTTP_400_BAD_REQUEST, message, param=param, code="invalid_value")


def speaker_labels(transcript: Transcript) -> dict[str, str]:
    """Generic labels (SPEAKER_00, ...) as OpenAI's letters (A, B, ...); names kept."""
    known = {s.speaker for s in transcript.speakers or () if s.known}
    labels: dict[str, str] = {}
    for segment in transcript.segments:
        speaker = segment.speaker
        if speaker is None or speaker in labels:
            continue
        if speaker in known:
            labels[speaker] = speaker
        else:
            count = sum(1 for label in labels if label not in known)
            labels[speaker] = _letters(count)
    return labels


def _letters(index: int) -> str:
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def diarized_segment(segment: Segment, labels: dict[str, str]) -> dict[str, Any]:
    speaker = segment.speaker
    return {
        "type": "transcript.text.segment",
        "id": f"seg_{segment.id:03d}",
        "start": segment.start,
        "end": segment.end,
        "speaker": labels.get(speaker, speaker) if speaker is not None else "unknown",
        "text": segment.text.strip(),
    }


def diarized_json(transcript: Transcript) -> dict[str, Any]:
    labels = speaker_labels(transcript)
    return {
        "task": "transcribe",
        "duration": transcript.duration_s,
        "text": transcript.text.strip(),
        "segments": [diarized_segment(s, labels) for s in transcript.segments if s.text.strip()],
    }


def segment_events(transcript: Transcript) -> list[str]:
    """`transcript.text.segment` per segment, then `transcript.text.done`, as SSE events."""
    labels = speaker_labels(transcript)
    events = [
        sse(diarized_segment(segment, labels))
        for segment in transcript.segments
        if segment.text.strip()
    ]
    return [*events, sse({"type": "transcript.text.done", "text": transcript.text.strip()})]
