"""Turning an accepted request body into a stored event: hashing, audio spooling.

Runs in a worker thread (called through anyio.to_thread), so hashing and writing a
25 MiB clip never block the event loop.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from skyhigh.audio import decode_base64_audio, write_spool_file
from skyhigh.payloads import DocumentPayload, SpeechPayload


def body_sha256(event_type: str, event_data: dict[str, Any]) -> str:
    """Hash of the request body in a canonical form: same body, same hash, whatever key order."""
    canonical = json.dumps(
        {"event_type": event_type, "event_data": event_data},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_spool_name() -> str:
    # Unique per request: a replayed body must never overwrite audio a queued event still needs.
    return f"{uuid.uuid4().hex}.audio"


def stored_form(payload: BaseModel) -> dict[str, Any]:
    """The payload as stored, with anything generated at intake filled in (so retries and
    recovery reuse it): a document without an id gets one here."""
    stored = payload.model_dump(exclude_none=True)
    if isinstance(payload, DocumentPayload) and payload.document_id is None:
        stored["document_id"] = f"doc-{uuid.uuid4().hex}"
    return stored


def spool_speech(payload: SpeechPayload, spool_dir: Path, *, max_bytes: int) -> dict[str, Any]:
    """The stored form of a speech payload: base64 audio decoded to a spool file."""
    stored = payload.model_dump(exclude={"audio_base64"}, exclude_none=True)
    if payload.audio_base64 is not None:
        audio = decode_base64_audio(payload.audio_base64, max_bytes=max_bytes)
        name = new_spool_name()
        write_spool_file(audio, spool_dir, name)
        stored["audio_file"] = name
    return stored
