"""The transcription-session subset of OpenAI's Realtime API: client events in, server events out.

Client events: `session.update` (type "transcription"), `input_audio_buffer.append`, `.commit`
and `.clear`. Anything else is answered with an `error` event and the session goes on.
Server events are plain dicts in OpenAI's shapes (the openai SDK parses them into its types).

SkyHigh extensions in `session`: `callback_url` (webhook for the event the session becomes) and
`index_transcript` (index it into the knowledge base), as on POST /events/.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyhigh.realtime.audio_formats import PCM, PCM_RATES, PCMA, PCMU
from skyhigh.realtime.turns import VadConfig

SESSION_UPDATE = "session.update"
APPEND = "input_audio_buffer.append"
COMMIT = "input_audio_buffer.commit"
CLEAR = "input_audio_buffer.clear"
CLIENT_EVENTS = (SESSION_UPDATE, APPEND, COMMIT, CLEAR)


class _Loose(BaseModel):
    # The SDK sends fields we do not act on (noise_reduction, include, ...): accepted, ignored.
    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Loose):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = PCM
    rate: int | None = None

    def sample_rate(self) -> int:
        if self.type != PCM:
            return 8_000
        rate = self.rate or 24_000
        if rate not in PCM_RATES:
            raise ValueError(f"audio/pcm rate must be one of {PCM_RATES}")
        return rate


class Transcription(_Loose):
    model: str | None = None
    language: str | None = Field(default=None, max_length=16)
    prompt: str | None = Field(default=None, max_length=1000)


class TurnDetection(_Loose):
    type: Literal["server_vad"] = "server_vad"
    threshold: float | None = Field(default=None, gt=0, lt=1)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=5_000)
    silence_duration_ms: int | None = Field(default=None, ge=100, le=10_000)

    def config(self, defaults: VadConfig) -> VadConfig:
        """These knobs; those not given from `defaults` (the server's)."""
        return VadConfig(
            threshold=defaults.threshold if self.threshold is None else self.threshold,
            prefix_padding_ms=self.prefix_padding_ms or defaults.prefix_padding_ms,
            silence_duration_ms=self.silence_duration_ms or defaults.silence_duration_ms,
        )


class AudioInput(_Loose):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class AudioConfig(_Loose):
    input: AudioInput | None = None


class SessionUpdate(_Loose):
    type: Literal["transcription"]
    audio: AudioConfig | None = None
    callback_url: str | None = Field(default=None, max_length=2048)
    index_transcript: bool | None = None


def parse_session_update(event: dict[str, Any]) -> tuple[SessionUpdate, bool]:
    """The update, and whether it set turn_detection (present as null means manual commits)."""
    raw = event.get("session")
    update = SessionUpdate.model_validate(raw)
    audio = raw.get("audio") if isinstance(raw, dict) else None
    given = isinstance(audio, dict) and "turn_detection" in (audio.get("input") or {})
    return update, given


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the param (dotted path) of the first problem."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return f"{first['msg']}" + (f" at session.{param}" if param else ""), param


# --------------------------------------------------------------------------- server events

_serial = itertools.count(1)


def event_id() -> str:
    return f"event_{secrets.token_hex(6)}{next(_serial)}"


def item_id() -> str:
    return f"item_{secrets.token_hex(10)}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": event_id(), **fields}


def error_event(
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    client_event_id: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error event: `error.event_id` names the client event that caused it."""
    error = {
        "type": kind,
        "code": code,
        "message": message,
        "param": param,
        "event_id": client_event_id,
    }
    return server_event("error", error=error)


def session_object(
    session_id: str,
    *,
    fmt: AudioFormat,
    transcription: Transcription,
    vad_config: VadConfig | None,
    model: str,
    skyhigh_event_id: str,
) -> dict[str, Any]:
    """The session as session.created/updated carry it (a transcription session)."""
    turn = None
    if vad_config is not None:
        turn = {
            "type": "server_vad",
            "threshold": vad_config.threshold,
            "prefix_padding_ms": vad_config.prefix_padding_ms,
            "silence_duration_ms": vad_config.silence_duration_ms,
        }
    audio_format: dict[str, Any] = {"type": fmt.type}
    if fmt.type == PCM:
        audio_format["rate"] = fmt.sample_rate()
    return {
        "type": "transcription",
        "id": session_id,
        "object": "realtime.transcription_session",
        "skyhigh_event_id": skyhigh_event_id,
        "audio": {
            "input": {
                "format": audio_format,
                "transcription": {
                    "model": model,
                    "language": transcription.language,
                    "prompt": transcription.prompt,
                },
                "turn_detection": turn,
            }
        },
    }


FORMATS = (PCM, PCMU, PCMA)
