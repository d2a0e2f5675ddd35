"""Live results: the stream bus, WebSocket and SSE against a real server, both Whisper engines."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pytest
import whisper

from skyhigh.config import Settings
from skyhigh.live.streams import Lagged, StreamBus
from skyhigh.speech.pool import TranscriberPool
from skyhigh.speech.protocol import TranscribeOptions
from tests.support.server import ServerProcess
from tests.support.settings import DATA, TOKENS, model_cache_dir
from tests.support.streams import final, segments_of, sse_messages, ws_messages

AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}
# 53 s of read speech: more than one VAD chunk (more than one window without VAD), and not
# repetitive (a chunk holding one sentence twice sends Whisper through every fallback).
SPEECH_53S = DATA / "sonnet1.flac"


def upload(server: ServerProcess, event_id: str, clip: Path, **form: str) -> None:
    files = {"file": (clip.name, clip.read_bytes(), f"audio/{clip.suffix[1:]}")}
    response = httpx.post(
        f"{server.url}/events/upload",
        headers=AUTH,
        files=files,
        data={"event_id": event_id, **form},
        timeout=30,
    )
    assert response.status_code == 202, response.text


# --------------------------------------------------------------------------- the bus alone


def test_a_slow_subscriber_is_cut_off_and_never_holds_up_the_publisher() -> None:
    async def scenario() -> tuple[list[str], bool, float]:
        bus = StreamBus(buffer=8)
        received: list[str] = []
        slow_lagged = False
        async with bus.subscribe("e1") as fast_feed, bus.subscribe("e1") as slow_feed:

            async def read_fast() -> None:
                async for message in fast_feed:
                    received.append(message.data)

            reader = asyncio.create_task(read_fast())
            slowest = 0.0

            def produce() -> None:
                nonlocal slowest
                for index in range(40):
                    started = time.perf_counter()
                    bus.publish("e1", {"type": "segment", "segment": {"id": index}})
                    slowest = max(slowest, time.perf_counter() - started)
                    time.sleep(0.002)  # a worker decoding; the loop gets to run in between
                bus.publish("e1", {"type": "status", "status": "completed"})

            await asyncio.to_thread(produce)
            await asyncio.wait_for(reader, 5)
            try:
                async for _ in slow_feed:  # never read until now: 41 messages, room for 8
                    pass
            except Lagged:
                slow_lagged = True
        return received, slow_lagged, slowest

    received, slow_lagged, slowest = asyncio.run(scenario())
    assert len(received) == 41 and '"id":39' in received[-2] and "completed" in received[-1]
    assert slow_lagged
    assert slowest < 0.05  # publishing is a hand-over, never a wait on a subscriber


def test_a_late_subscription_starts_with_the_current_attempt() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        bus = StreamBus()
        bus.publish("e1", {"type": "status", "status": "processing", "attempts": 1})
        bus.publish("e1", {"type": "segment", "segment": {"id": 0, "text": "stale"}})
        # A second attempt (after a crash) starts afresh: its subscribers must not see "stale".
        bus.publish("e1", {"type": "status", "status": "processing", "attempts": 2})
        bus.publish("e1", {"type": "segment", "segment": {"id": 0, "text": "fresh"}})
        async with bus.subscribe("e1") as feed:
            backlog = [m.data for m in feed.backlog]
            bus.publish("e1", {"type": "status", "status": "completed"})
            live = [m.data async for m in feed]
        return backlog, live

    backlog, live = asyncio.run(scenario())
    assert len(backlog) == 2 and '"attempts":2' in backlog[0] and "fresh" in backlog[1]
    assert len(live) == 1 and "completed" in live[0]
    assert StreamBus().subscriber_count() == 0


# --------------------------------------------------------------------------- engines


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["openai-whisper", "faster-whisper"])
def test_engines_report_segments_while_decoding(
    engine: Literal["openai-whisper", "faster-whisper"],
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        whisper_engine=engine,
        whisper_model="tiny.en",
        model_cache_dir=model_cache_dir(),
    )
    transcriber = TranscriberPool.from_settings(settings.speech)
    audio: np.ndarray[Any, np.dtype[np.float32]] = whisper.audio.load_audio(str(SPEECH_53S))
    arrivals: list[float] = []
    started = time.perf_counter()
    transcript = transcriber.transcribe(
        audio,
        # Greedy, as realtime partials are: how segments are reported does not depend on the
        # beam, and openai-whisper's default beam 5 would triple the decode.
        TranscribeOptions(language="en", beam_size=1),
        on_segment=lambda _: arrivals.append(time.perf_counter()),
    )
    total = time.perf_counter() - started
    assert len(arrivals) == len(transcript.segments) >= 3
    assert transcript.segments[0].start < 30 <= transcript.segments[-1].start  # both windows
    # The first window's segments arrive while the second window is still being decoded.
    assert arrivals[0] - started < 0.8 * total, (arrivals[0] - started, total)


# --------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_ws_and_sse_get_every_segment_in_order_then_the_result(
    live_server: ServerProcess,
) -> None:
    clip = SPEECH_53S
    # One worker: a first event keeps ours queued, so both subscribers join before it starts.
    upload(live_server, "stream-blocker", DATA / "jfk.wav", lookup="false")
    upload(live_server, "stream-1", clip, language="en")
    sse: list[dict[str, Any]] = []
    sse_reader = threading.Thread(
        target=lambda: sse.extend(sse_messages(live_server.url, "stream-1", token=TOKENS[1]))
    )
    sse_reader.start()
    ws, code = ws_messages(live_server.url, "stream-1", token=TOKENS[0])
    sse_reader.join(60)

    assert code == 1000
    assert ws[0]["type"] == "status" and ws[0]["status"] == "queued", ws[0]
    kinds = [m["type"] if m["type"] != "status" else m["status"] for m in ws]
    assert kinds.index("processing") < kinds.index("segment") < kinds.index("transcript")
    assert kinds.index("transcript") < kinds.index("matches") < len(kinds) - 1
    result = final(ws)
    assert result["status"] == "completed"
    streamed = segments_of(ws)
    assert [s["id"] for s in streamed] == list(range(len(streamed)))
    assert streamed == result["result"]["transcript"]["segments"]
    assert "fairest creatures" in " ".join(s["text"] for s in streamed).lower()

    assert segments_of(sse) == streamed
    assert final(sse) == result


@pytest.mark.slow
def test_late_subscribers_still_get_the_full_state(
    live_server: ServerProcess,
) -> None:
    clip = SPEECH_53S
    first_segment = threading.Event()
    early: list[dict[str, Any]] = []

    def follow_early() -> None:
        for message in sse_messages(live_server.url, "late-1", token=TOKENS[0]):
            early.append(message)
            if message["type"] == "segment":
                first_segment.set()

    upload(live_server, "late-1", clip, language="en", lookup="false")
    reader = threading.Thread(target=follow_early)
    reader.start()
    assert first_segment.wait(120)
    # Joins mid-transcription, authenticating the way a browser does (token as subprotocol).
    late, code = ws_messages(live_server.url, "late-1", subprotocol_token=TOKENS[1])
    reader.join(60)

    assert code == 1000
    assert late[0]["type"] == "status" and late[0]["status"] in ("processing", "completed")
    outcome = final(late)["result"]["transcript"]["segments"]
    if late[0]["status"] == "processing":  # the usual case: the backlog, then live segments
        assert segments_of(late) == outcome
    assert segments_of(early) == outcome

    after, code = ws_messages(live_server.url, "late-1", token=TOKENS[0])
    assert code == 1000 and len(after) == 1  # just the outcome, complete
    assert after[0]["status"] == "completed" and after[0]["result"]["transcript"]["segments"]


@pytest.mark.slow
def test_streams_refuse_bad_tokens_and_unknown_events(live_server: ServerProcess) -> None:
    httpx.post(
        f"{live_server.url}/events/",
        headers=AUTH,
        json={"event_id": "auth-1", "event_type": "query", "event_data": {"text": "pets"}},
    ).raise_for_status()
    for credentials in ({"subprotocol_token": "wrong-token"}, {"token": "wrong"}, {}):
        messages, code = ws_messages(live_server.url, "auth-1", **credentials)  # type: ignore[arg-type]
        assert (messages, code) == ([], 1008), credentials
    messages, code = ws_messages(live_server.url, "no-such-event", token=TOKENS[0])
    assert (messages, code) == ([], 4404)

    stream_url = f"{live_server.url}/events/auth-1/stream"
    assert httpx.get(stream_url).status_code == 401
    bad = httpx.get(stream_url, headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]
    missing = httpx.get(f"{live_server.url}/events/no-such-event/stream", headers=AUTH)
    assert missing.status_code == 404
