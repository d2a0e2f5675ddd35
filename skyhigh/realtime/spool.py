"""A session's audio on disk as it arrives, so that no accepted audio is lost.

Each session writes `<session>.wav` (16 kHz mono 16-bit PCM; the header's sizes are patched when
the session ends) and `<session>.json` (who, and the event options) into SPOOL_DIR/realtime;
the audio is fsynced about once a second while it arrives. When the session ends it becomes an
event through the normal intake, and both files go. A crash leaves them behind: `pending()`
finds them at the next start, and they become events then.

Everything here blocks: callers run it on a worker thread.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from skyhigh.domain.tenancy import Principal
from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

HEADER_BYTES = 44
BYTES_PER_SECOND = SAMPLE_RATE * 2
# A killed process loses nothing that was flushed; a machine that loses power loses at most
# this long of a session's audio (fsync at most once per this many seconds while it streams).
FSYNC_INTERVAL_S = 1.0


@dataclass(frozen=True)
class SpooledSession:
    """What the event needs besides the audio."""

    session_id: str
    event_id: str
    subject: str
    method: str
    owner: str
    scopes: list[str]
    language: str | None = None
    prompt: str | None = None
    callback_url: str | None = None
    index_transcript: bool | None = None
    # Charged to the audio quota as it streamed (skyhigh.realtime.metering), so the event is not
    # charged again; False in a spool left by a version that charged the event instead.
    audio_charged: bool = False

    def principal(self) -> Principal:
        return Principal(self.subject, self.method, self.owner, frozenset(self.scopes))


def wav_header(data_bytes: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        SAMPLE_RATE,
        BYTES_PER_SECOND,
        2,
        16,
        b"data",
        data_bytes,
    )


class SessionSpool:
    """One session's files; `append` as audio arrives, `seal` when it ends."""

    def __init__(self, directory: Path, meta: SpooledSession) -> None:
        self.meta = meta
        self.wav = directory / f"{meta.session_id}.wav"
        self.json = directory / f"{meta.session_id}.json"
        directory.mkdir(parents=True, exist_ok=True)
        self.json.write_text(json.dumps(asdict(meta)))
        self._file: BinaryIO | None = self.wav.open("wb")
        self._file.write(wav_header(0))
        self._synced_at = 0.0
        self._sync(directory)
        self.bytes = 0

    def update(self, meta: SpooledSession) -> None:
        self.meta = meta
        self.json.write_text(json.dumps(asdict(meta)))

    def append(self, samples: FloatArray) -> None:
        if self._file is None or len(samples) == 0:
            return
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self._file.write(pcm)
        self._file.flush()  # in the OS's hands: a killed process loses none of it
        self.bytes += len(pcm)
        if time.monotonic() - self._synced_at >= FSYNC_INTERVAL_S:
            os.fsync(self._file.fileno())  # on disk: a power loss loses at most the last second
            self._synced_at = time.monotonic()

    def _sync(self, directory: Path) -> None:
        """The new files, and their names in the directory, on disk."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        with self.json.open("rb") as meta:
            os.fsync(meta.fileno())
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self._synced_at = time.monotonic()

    @property
    def seconds(self) -> float:
        return self.bytes / BYTES_PER_SECOND

    def seal(self) -> Path:
        """Close the file with its true sizes (durably); the path of a playable WAV."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return seal(self.wav)


def seal(wav: Path) -> Path:
    data_bytes = max(wav.stat().st_size - HEADER_BYTES, 0)
    data_bytes -= data_bytes % 2
    with wav.open("r+b") as file:
        file.write(wav_header(data_bytes))
        file.truncate(HEADER_BYTES + data_bytes)
        file.flush()
        os.fsync(file.fileno())
    return wav


def pending(directory: Path) -> list[SpooledSession]:
    """Sessions a previous process left behind (their audio not yet an event)."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            found.append(SpooledSession(**raw))
        except (ValueError, TypeError):
            continue  # torn write of the metadata: the session never spooled audio
    return found


def remove(directory: Path, session_id: str) -> None:
    for suffix in (".wav", ".json"):
        (directory / f"{session_id}{suffix}").unlink(missing_ok=True)
