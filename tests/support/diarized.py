"""The two-speaker conversation as a client sends it, and its diarized speech event.

Diarizing the conversation (29.7 s: tiny.en, the speaker model, a known speaker's reference)
is the slow part of the diarization tests on the session app. The result tests
(tests/test_diarization_events.py) and the speaker index tests (tests/test_speaker_index.py)
read one event asking for everything both check: word timestamps, the named reader, and the
transcript indexed for search.
"""

from __future__ import annotations

import base64
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests.conversations import Conversation, conversations, utterances
from tests.support.client import wait_terminal

DIARIZED_EVENT_ID = "diarized-two-speakers"


def encoded(audio: np.ndarray, directory: Path, name: str) -> bytes:
    """The clip as Ogg Opus at 64 kbit/s (as a client would send a call; FLAC of the noisy
    conversation would pass the test app's 1 MB audio limit)."""
    raw = directory / f"{name}.f32"
    out = directory / f"{name}.ogg"
    raw.write_bytes(np.asarray(audio, dtype=np.float32).tobytes())
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "f32le", "-ar", "16000"]
        + ["-ac", "1", "-i", str(raw), "-c:a", "libopus", "-b:a", "64k", str(out)],
        check=True,
    )
    return out.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@cache
def two_speakers() -> Conversation:
    return conversations()[0]  # jfk-sonnet: 29.7 s, JFK and the Sonnet reader taking turns


def reader_reference(directory: Path) -> str:
    # The sonnet's closing lines: never reached by the conversation's four sonnet turns.
    return b64(encoded(utterances("sonnet")[-1].audio, directory, "reader-ref"))


def diarize_two_speakers(client: TestClient, directory: Path) -> dict[str, Any]:
    """The conversation as one speech event (the reader named, words timed, the transcript
    indexed); its completed record."""
    body = {
        "event_id": DIARIZED_EVENT_ID,
        "event_type": "speech",
        "event_data": {
            "audio_base64": b64(encoded(two_speakers().audio, directory, "conversation")),
            "language": "en",
            "lookup": False,
            "word_timestamps": True,
            "index_transcript": True,
            "diarize": True,
            "known_speakers": [{"name": "Reader", "audio_base64": reader_reference(directory)}],
        },
    }
    response = client.post("/events/", json=body)
    assert response.status_code == 202, response.text
    record = wait_terminal(client.get, DIARIZED_EVENT_ID, timeout_s=300)
    assert record["status"] == "completed", record
    return record
