"""Realtime transcription over a real WebSocket, spoken to by the official openai SDK.

The session's live server (tests/conftest.py: REALTIME_ENABLED, tiny.en on faster-whisper for
realtime, and the limits these tests reach); sessions stream real recordings in 100 ms appends,
at half real time or as fast as the server takes them; the demo page's microphone plays in
real time.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.speech_helpers import jfk_reference, normalise, wer
from tests.support.browser import Browser, fake_microphone
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
from tests.support.settings import AUTH, DATA, TOKENS

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
def server(live_server: ServerProcess) -> ServerProcess:
    """The shared live server: realtime is on there, with REALTIME_MAX_SESSIONS 3,
    REALTIME_SESSIONS_PER_PRINCIPAL 2, REALTIME_MAX_APPEND_BYTES 64 KiB and
    REALTIME_IDLE_TIMEOUT_S 3."""
    return live_server


@pytest.fixture(scope="module", autouse=True)
def expiring_secret(server: ServerProcess) -> dict[str, Any]:
    """A client secret with the shortest lifetime a client may ask for (10 s, OpenAI's lower
    bound), minted before the module's first test: the expiry test then waits out only what is
    left of it, not all ten seconds. (Secrets live in the server's memory: no test before that
    one restarts it.)"""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        body = {"expires_after": {"anchor": "created_at", "seconds": 10}}
        response = http.post("/v1/realtime/client_secrets", json=body)
    assert response.status_code == 200, response.text
    minted: dict[str, Any] = response.json()
    return minted


def _connect(server: ServerProcess, api_key: str = TOKENS[0]) -> Any:
    return client(server.url, api_key).realtime.connect(extra_query={"intent": "transcription"})


def _event(server: ServerProcess, event_id: str) -> dict[str, Any]:
    """The session's event once terminal. The server stores it after the socket closes, so the
    first reads just after a client's close may still be 404 (README, "Every session is an
    event"); anything else but 200 fails at once."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        deadline = time.monotonic() + 10
        while http.get(f"/events/{event_id}").status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)
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


def test_turns_close_at_the_readers_pauses_not_inside_lines(server: ServerProcess) -> None:
    # The sonnet's first 14.8 s: "Sonnet one", a pause, lines 1-2, a pause, lines 3-4; inside
    # the lines only pauses shorter than the 500 ms silence duration. A VAD that forgot Silero's
    # state at every append heard pauses inside words there: five turns, words clipped at cuts.
    audio = pcm16(SONNET)[: PCM24 * 148 // 10]
    with _connect(server) as connection:
        listener = Listener(connection)
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: bool(r.of("session.updated")))
        stream(connection, audio, PCM24, pace=0)
        received = listener.wait_for(turns_settled)
    stops = [e["audio_end_ms"] for e in received.of("input_audio_buffer.speech_stopped")]
    assert len(stops) == 3, (stops, received.completed_text)
    # The VAD stops after "one" (0.9 s) and after "die" (8.7 s); the 0.36 s pause after line 1
    # (5.5 s) is shorter than the silence duration and stays inside the turn.
    assert 800 < stops[0] < 1_500 and 8_500 < stops[1] < 9_200, stops
    text = normalise(received.completed_text)
    assert "beauty's rose might never die" in text and "bear his memory" in text, text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_manual_commit_and_clear(server: ServerProcess) -> None:
    audio = pcm16(JFK, 16_000)
    fmt = {"type": "audio/pcm", "rate": 16_000}
    with _connect(server) as connection:
        listener = Listener(connection)
        update = session_update(fmt=fmt, turn_detection=None)
        connection.send({"type": "session.update", "session": update})
        updated = listener.wait_for(lambda r: bool(r.of("session.updated")))
        assert (
            updated.of("session.updated")[0]["session"]["audio"]["input"]["turn_detection"] is None
        )
        # A clear drops what was appended: the commit then has nothing.
        connection.send({"type": "input_audio_buffer.append", "audio": _b64(audio[:32_000])})
        connection.send({"type": "input_audio_buffer.clear"})
        listener.wait_for(lambda r: bool(r.of("input_audio_buffer.cleared")))
        connection.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        error = listener.wait_for(lambda r: bool(r.of("error"))).of("error")[0]["error"]
        assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "c1"
        stream(connection, audio, 32_000, pace=0, trailing_silence_s=0)
        connection.send({"type": "input_audio_buffer.commit"})
        received = listener.wait_for(turns_settled)
    assert not received.of("input_audio_buffer.speech_started")  # no VAD in manual mode
    assert len(received.of("input_audio_buffer.committed")) == 1
    assert wer(jfk_reference(), received.completed_text) < 0.15, received.completed_text


def test_bad_events_get_errors_and_the_session_goes_on(server: ServerProcess) -> None:
    with _connect(server) as connection:
        listener = Listener(connection)
        connection.send({"type": "response.create", "event_id": "x1"})
        connection.send({"type": "session.update", "session": {"type": "realtime"}})
        bad_rate = session_update(fmt={"type": "audio/pcm", "rate": 44_100})
        connection.send({"type": "session.update", "session": bad_rate})
        connection.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
        connection.send({"type": "input_audio_buffer.append", "audio": _b64(bytes(70_000))})
        received = listener.wait_for(lambda r: len(r.of("error")) >= 5)
        codes = [event["error"]["code"] for event in received.of("error")]
        assert codes == [
            "unknown_event",
            "invalid_session",
            "invalid_session",
            "invalid_audio",
            "append_too_large",
        ]
        first = received.of("error")[0]["error"]
        assert first["event_id"] == "x1" and "response.create" in first["message"]
        assert "REALTIME_MAX_APPEND_BYTES" in received.of("error")[4]["error"]["message"]
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: bool(r.of("session.updated")))  # still serving


def test_auth_failures_close_with_1008(server: ServerProcess) -> None:
    with _connect(server, api_key="not-a-token-0123456789") as connection:
        listener = Listener(connection)
        with pytest.raises(AssertionError, match="socket closed"):
            listener.wait_for(lambda r: False, timeout_s=10)
    assert listener.received.of("error")[0]["error"]["type"] == "authentication_error"
    assert getattr(listener.closed, "rcvd", None) is not None
    assert listener.closed.rcvd.code == 1008  # type: ignore[union-attr]
    # Without ?intent=transcription: refused too.
    with client(server.url, TOKENS[0]).realtime.connect(model="gpt-realtime") as connection:
        listener = Listener(connection)
        with pytest.raises(AssertionError, match="socket closed"):
            listener.wait_for(lambda r: False, timeout_s=10)
    assert listener.received.of("error")[0]["error"]["code"] == "unsupported_intent"


def _mint(server: ServerProcess, **body: Any) -> str:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        response = http.post("/v1/realtime/client_secrets", json=body or None)
        assert response.status_code == 200, response.text
        value: str = response.json()["value"]
        return value


def _subprotocol_session(server: ServerProcess, credential: str) -> tuple[list[str], int | None]:
    """A browser's way in: the credential as a subprotocol; the event types and close code."""
    url = server.url.replace("http", "ws") + "/v1/realtime?intent=transcription"
    kinds: list[str] = []
    with ws_connect(url, subprotocols=["bearer", credential]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "bearer"
        try:
            first = json.loads(socket.recv(timeout=10))
            kinds.append(first["type"])
            if first["type"] == "session.created":
                return kinds, None
            socket.recv(timeout=10)
        except ConnectionClosed as closed:
            return kinds, closed.rcvd.code if closed.rcvd else None
    return kinds, None


def test_client_secrets_are_single_use_and_expire(
    server: ServerProcess, expiring_secret: dict[str, Any]
) -> None:
    secret = _mint(server)
    assert _subprotocol_session(server, secret) == (["session.created"], None)
    assert _subprotocol_session(server, secret) == (["error"], 1008)  # reused
    short = _mint(server, expires_after={"anchor": "created_at", "seconds": 10})
    with client(server.url, short).realtime.connect(
        extra_query={"intent": "transcription"}
    ) as connection:  # the SDK with the secret as its api key
        listener = Listener(connection)
        listener.wait_for(lambda r: bool(r.of("session.created")))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/v1/realtime/client_secrets").status_code == 401
    # Minted (with the same 10 s) before this module's first test; `expires_at` is whole
    # seconds, the server's expiry is not: past it by a second, the secret has expired.
    assert expiring_secret["expires_at"] - time.time() <= 10
    time.sleep(max(0.0, expiring_secret["expires_at"] + 1 - time.time()))
    assert _subprotocol_session(server, expiring_secret["value"]) == (["error"], 1008)  # expired
    assert _subprotocol_session(server, TOKENS[1]) == (["session.created"], None)


def test_limits_idle_timeout_and_sessions_per_principal(server: ServerProcess) -> None:
    with _connect(server) as first, _connect(server) as second:
        a, b = Listener(first), Listener(second)
        a.wait_for(lambda r: bool(r.of("session.created")))
        b.wait_for(lambda r: bool(r.of("session.created")))
        with _connect(server) as third:
            refused = Listener(third)
            with pytest.raises(AssertionError, match="socket closed"):
                refused.wait_for(lambda r: False, timeout_s=10)
        error = refused.received.of("error")[0]["error"]
        assert error["code"] == "session_limit_reached"
        assert "REALTIME_SESSIONS_PER_PRINCIPAL" in error["message"]
        assert refused.closed.rcvd.code == 1013  # type: ignore[union-attr]
        # Nothing sent for REALTIME_IDLE_TIMEOUT_S (3 s): the server ends the session.
        with pytest.raises(AssertionError, match="socket closed"):
            a.wait_for(lambda r: False, timeout_s=15)
        assert a.received.of("error")[-1]["error"]["code"] == "idle_timeout"


def test_kill_9_mid_session_the_spooled_audio_becomes_an_event(server: ServerProcess) -> None:
    process = server  # the shared one: killed here and started again (same port, same spool)
    try:
        audio = pcm16(JFK)
        connection = _connect(process).__enter__()
        listener = Listener(connection)
        created = listener.wait_for(lambda r: bool(r.of("session.created")))
        event_id = created.of("session.created")[0]["session"]["skyhigh_event_id"]
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: bool(r.of("session.updated")))
        stream(connection, audio, PCM24, pace=0, trailing_silence_s=0)
        listener.wait_for(lambda r: bool(r.of("input_audio_buffer.speech_started")))
        # The server handles a session's events in order, and an append is in the spool file
        # (flushed) before the next event is read: once a session.update sent after the last
        # append is answered, all the audio has reached the spool.
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: len(r.of("session.updated")) == 2)
        process.kill()
        process.start()
        record = _event(process, event_id)
    finally:
        if process.proc is None or process.proc.poll() is not None:
            process.start()  # running again for the other tests, whatever failed
    assert record["status"] == "completed", record
    assert wer(jfk_reference(), record["result"]["transcript"]["text"]) < 0.15


LIVE_STATE = """JSON.stringify({
  turns: [...document.querySelectorAll("#live-turns li")]
    .map((li) => [li.className, li.textContent]),
  types: window.skyhighDemo.live.messages.map((m) => m.type),
  event: document.getElementById("event-id").textContent,
  status: document.getElementById("status").textContent,
  error: document.getElementById("error").textContent,
  segments: [...document.querySelectorAll("#segments li")].map((li) => li.textContent),
})"""
SAID = """/what your country can do for you/i.test([...document.querySelectorAll(
  "#live-turns li.final")].map((li) => li.textContent).join(" "))"""


@pytest.mark.needs("chromium")
def test_demo_microphone_shows_live_captions_and_the_session_becomes_an_event(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The /demo page's live captions in headless chromium, its microphone playing JFK."""
    with Browser(tmp_path / "profile", *fake_microphone(JFK)) as browser:
        browser.goto(f"{server.url}/demo")
        browser.evaluate(
            f"""const t = document.getElementById("token"); t.value = {json.dumps(TOKENS[0])};
            t.dispatchEvent(new Event("change")); true"""
        )
        click = 'document.getElementById("live").click(); true'
        browser.evaluate(click, user_gesture=True)
        browser.wait_for(SAID, timeout_s=90)
        browser.evaluate(click, user_gesture=True)  # stop: the session ends and becomes an event
        browser.wait_for(
            'document.getElementById("status").textContent === "completed"', timeout_s=120
        )
        state = json.loads(browser.evaluate(LIVE_STATE))
    assert state["error"] == "", state
    types = state["types"]
    assert types[0] == "session.created" and "session.updated" in types, types
    delta = "conversation.item.input_audio_transcription.delta"
    completed = "conversation.item.input_audio_transcription.completed"
    assert delta in types and types.index(delta) < types.index(completed), types
    finals = normalise(" ".join(text for kind, text in state["turns"] if kind == "final"))
    said = "and so my fellow americans ask not what your country can do for you"
    # The microphone loops the clip, so the captions run on past the sentence: score the prefix
    # that matches it best. tiny.en on the browser's resampled capture sometimes hears "my" as
    # "am i" (two errors), so three of fourteen words are allowed.
    words, n = finals.split(), len(said.split())
    best = min(wer(said, " ".join(words[:length])) for length in range(n - 2, n + 3))
    assert best <= 3 / n, finals
    assert state["event"].startswith("realtime-sess_"), state
    assert "ask not what your country" in " ".join(state["segments"]).lower(), state
    record = _event(server, state["event"])
    assert record["status"] == "completed" and record["event_type"] == "speech", record
