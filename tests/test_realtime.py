"""Realtime transcription over a real WebSocket, spoken to by the official openai SDK.

One server per module (REALTIME_ENABLED, tiny.en on faster-whisper for realtime); sessions
stream real recordings in 100 ms appends. Only the pacing test streams at real time.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
)

from tests.speech_helpers import jfk_reference, wer
from tests.support.client import wait_terminal
from tests.support.realtime import (
    Listener,
    client,
    pcm16,
    session_update,
    stream,
    turns_settled,
)
from tests.support.server import ServerProcess
from tests.support.settings import AUTH, DATA, TOKENS, server_env

pytestmark = [
    pytest.mark.slow,
    # openai 3.51 declares websockets<16; with the pinned 17.x its sync client still works, and
    # warns that connect() should be a context manager.
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager"),
]

JFK = DATA / "jfk.wav"
SONNET = DATA / "sonnet1.flac"
PCM24 = 48_000  # bytes per second of 24 kHz 16-bit mono


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("realtime")
    env = server_env(
        tmp,
        REALTIME_ENABLED="true",
        REALTIME_MAX_SESSIONS="3",
        REALTIME_SESSIONS_PER_PRINCIPAL="2",
        REALTIME_MAX_APPEND_BYTES="65536",
        REALTIME_IDLE_TIMEOUT_S="3",
        EMBEDDING_BACKEND="torch",
    )
    process = ServerProcess(env, tmp / "server.log")
    process.start()
    yield process
    process.stop()


def _connect(server: ServerProcess, api_key: str = TOKENS[0]) -> Any:
    return client(server.url, api_key).realtime.connect(extra_query={"intent": "transcription"})


def _event(server: ServerProcess, event_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        return wait_terminal(http.get, event_id)


def test_sdk_streams_a_recording_and_the_session_becomes_an_event(server: ServerProcess) -> None:
    audio = pcm16(JFK)
    with _connect(server) as connection:
        listener = Listener(connection)
        created = listener.wait_for(lambda r: bool(r.of("session.created")))
        event_id = created.of("session.created")[0]["session"]["skyhigh_event_id"]
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: bool(r.of("session.updated")))
        stream(connection, audio, PCM24, pace=0.5)
        received = listener.wait_for(turns_settled)
    assert received.of("input_audio_buffer.speech_started")
    assert wer(jfk_reference(), received.completed_text) < 0.15, received.completed_text
    deltas = [e for e in listener.typed if e.type.endswith("transcription.delta")]
    assert deltas and all(
        isinstance(e, ConversationItemInputAudioTranscriptionDeltaEvent) for e in deltas
    )
    completed = [e for e in listener.typed if e.type.endswith("transcription.completed")]
    assert all(
        isinstance(e, ConversationItemInputAudioTranscriptionCompletedEvent) for e in completed
    )
    items = {e["item_id"] for e in received.of("input_audio_buffer.committed")}
    assert {e.item_id for e in completed} == items
    record = _event(server, event_id)
    assert record["status"] == "completed", record
    assert wer(jfk_reference(), record["result"]["transcript"]["text"]) < 0.15
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        listed = http.get("/events/", params={"limit": 100}).json()
        assert event_id in [item["event_id"] for item in listed["items"]]
        srt = http.get(f"/events/{event_id}/transcript", params={"format": "srt"})
        assert srt.status_code == 200 and "-->" in srt.text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unused(_: Path) -> None:
    pass
