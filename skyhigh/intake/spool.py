"""Turning an accepted request body into what is stored: body hashes, spooled audio.

    decode_base64_audio   invalid_base64, audio_too_large, empty_audio (StepFailed codes)

Everything here blocks (hashing megabytes, base64 decoding, fsync): the intake service calls
it through a worker thread (anyio.to_thread), so a 25 MiB clip never blocks the event loop.
Base64 is decoded here, not checked for syntax first: the API spools the decoded bytes before
answering 202, so it needs them anyway, and decoding 25 MiB takes about a tenth of a second.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.domain.payloads import DocumentPayload, SpeechPayload
from skyhigh.durable_files import atomic_writer, fsync_dir

_ASCII_WHITESPACE = str.maketrans("", "", " \t\r\n\f\v")
_DATA_URL_HINT = "expected data:audio/<type>;base64,<data>"
# Webhook targets are stored with their deliveries, not in the payload the workers read.
NOT_STORED = {"callback_url"}


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
    stored = payload.model_dump(exclude_none=True, exclude=NOT_STORED)
    if isinstance(payload, DocumentPayload) and payload.document_id is None:
        stored["document_id"] = f"doc-{uuid.uuid4().hex}"
    return stored


def copy_upload(upload: BinaryIO, spool_dir: Path, name: str, *, max_bytes: int) -> str:
    """Copy an uploaded file into the spool in chunks, durably; its SHA-256.

    Raises audio_too_large past `max_bytes` and empty_audio for an empty file.
    """
    digest = hashlib.sha256()
    size = 0
    upload.seek(0)
    with atomic_writer(spool_dir / name) as out:
        while chunk := upload.read(1024 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise StepFailed(
                    ErrorCode.AUDIO_TOO_LARGE,
                    f"audio is larger than MAX_AUDIO_BYTES ({max_bytes} bytes)",
                )
            digest.update(chunk)
            out.write(chunk)
        if size == 0:
            raise StepFailed(ErrorCode.EMPTY_AUDIO, "the uploaded file is empty")
    fsync_dir(spool_dir)
    return digest.hexdigest()


def spool_speech(payload: SpeechPayload, spool_dir: Path, *, max_bytes: int) -> dict[str, Any]:
    """The stored form of a speech payload: base64 audio decoded to a spool file."""
    stored = payload.model_dump(exclude={"audio_base64"} | NOT_STORED, exclude_none=True)
    if payload.audio_base64 is not None:
        audio = decode_base64_audio(payload.audio_base64, max_bytes=max_bytes)
        name = new_spool_name()
        write_spool_file(audio, spool_dir, name)
        stored["audio_file"] = name
    return stored


# --------------------------------------------------------------------------- base64


def decode_base64_audio(value: str, *, max_bytes: int) -> bytes:
    """Decode standard base64 or a `data:audio/...;base64,` URL; ASCII whitespace is ignored.

    Raises invalid_base64, audio_too_large (judged from the encoded length, before decoding)
    or empty_audio (nothing to decode).
    """
    payload = _strip_data_url(value.strip()).translate(_ASCII_WHITESPACE)
    if not payload:
        raise StepFailed(ErrorCode.EMPTY_AUDIO, "audio_base64 is empty")
    size = _decoded_size(payload)
    if size > max_bytes:
        raise StepFailed(
            ErrorCode.AUDIO_TOO_LARGE,
            f"decoded audio would be {size} bytes; the limit is {max_bytes} (MAX_AUDIO_BYTES)",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters
        raise StepFailed(ErrorCode.INVALID_BASE64, _base64_hint(payload, exc)) from None


def _strip_data_url(value: str) -> str:
    if value[:5].lower() != "data:":
        return value
    header, comma, data = value.partition(",")
    media = header[5:].lower()
    # Parameters such as `;codecs=opus` (MediaRecorder) may sit between the type and `;base64`.
    if not comma or not media.startswith("audio/") or not media.endswith(";base64"):
        raise StepFailed(ErrorCode.INVALID_BASE64, f"malformed data URL: {_DATA_URL_HINT}")
    return data


def _decoded_size(payload: str) -> int:
    padding = len(payload) - len(payload.rstrip("="))
    return len(payload) * 3 // 4 - min(padding, 2)


def _base64_hint(payload: str, exc: ValueError) -> str:
    message = f"audio_base64 is not valid base64 ({exc})"
    if "-" in payload or "_" in payload:
        message += "; use the standard alphabet (+ and /), not the URL-safe one"
    return message


# --------------------------------------------------------------------------- spool


def write_spool_file(data: bytes, spool_dir: Path, name: str) -> Path:
    """Write `data` to `spool_dir/name` atomically and durably; returns the path.

    The 202 promises the event will run, so the bytes are fsynced before the rename and the
    rename before returning: a crash leaves either no file or the whole file.
    """
    if name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"spool file name must be a plain file name, got {name!r}")
    dest = spool_dir / name
    with atomic_writer(dest) as out:
        out.write(data)
    fsync_dir(spool_dir)
    return dest
