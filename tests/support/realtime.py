"""Realtime sessions for tests and benchmarks: recordings as PCM, streamed with the openai SDK."""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import OpenAI

CHUNK_MS = 100


def pcm16(path: Path, rate: int = 24_000, *, codec: str = "s16le") -> bytes:
    """The recording as mono raw audio at `rate` (codec: s16le, mulaw or alaw)."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(rate)]
    return subprocess.run(
        [*command, "-f", codec, "-"], check=True, capture_output=True, timeout=60
    ).stdout


def chunks(audio: bytes, bytes_per_second: int, ms: int = CHUNK_MS) -> Iterator[bytes]:
    size = bytes_per_second * ms // 1000
    for start in range(0, len(audio), size):
        yield audio[start : start + size]


def client(base_url: str, api_key: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)


def session_update(
    *, fmt: dict[str, Any] | None = None, turn_detection: Any = "default", **extra: Any
) -> dict[str, Any]:
    audio_input: dict[str, Any] = {
        "format": fmt or {"type": "audio/pcm", "rate": 24_000},
        "transcription": {"model": "whisper-1", "language": "en"},
    }
    if turn_detection != "default":
        audio_input["turn_detection"] = turn_detection
    return {"type": "transcription", "audio": {"input": audio_input}, **extra}


@dataclass
class Received:
    """Server events with the monotonic time each arrived."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for _, event in self.events if event["type"] == kind]

    def times(self, kind: str) -> list[float]:
        return [at for at, event in self.events if event["type"] == kind]

    @property
    def completed_text(self) -> str:
        done = self.of("conversation.item.input_audio_transcription.completed")
        return " ".join(event["transcript"] for event in done)


def stream(
    connection: Any,
    audio: bytes,
    bytes_per_second: int,
    *,
    pace: float = 1.0,
    trailing_silence_s: float = 1.5,
) -> float:
    """Append the audio in 100 ms pieces (pace 1.0: real time; 0: as fast as possible), then
    some silence so the VAD closes the last turn; the monotonic time streaming started."""
    started = time.monotonic()
    silence = bytes(int(bytes_per_second * trailing_silence_s) // 2 * 2)
    for index, piece in enumerate(chunks(audio + silence, bytes_per_second)):
        due = started + index * CHUNK_MS / 1000 * pace
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        connection.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()}
        )
    return started


class Listener:
    """Reads server events on a thread (and parses each with the SDK, as its `recv` does)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.received = Received()
        self.typed: list[Any] = []
        self.closed: BaseException | None = None
        self._queue: queue.Queue[int] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                raw = self.connection.recv_bytes()
                # The dict as sent (the SDK's models warn when dumping values its types do
                # not list, such as a 16 kHz rate), and the SDK's parse of it.
                self.typed.append(self.connection.parse_event(raw))
            except BaseException as exc:  # the socket closed
                self.closed = exc
                self._queue.put(0)
                return
            self.received.events.append((time.monotonic(), json.loads(raw)))
            self._queue.put(1)

    def wait_for(self, done: Callable[[Received], bool], *, timeout_s: float = 60.0) -> Received:
        deadline = time.monotonic() + timeout_s
        while not done(self.received):
            if self.closed is not None and self._queue.empty():
                raise AssertionError(f"socket closed ({self.closed!r}); got {self.kinds()}")
            try:
                self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"timed out; got {self.kinds()}") from None
        return self.received

    def kinds(self) -> list[str]:
        return [event["type"] for _, event in self.received.events]


def turns_settled(received: Received) -> bool:
    """Every committed turn has its completed transcript, and no speech is open."""
    committed = len(received.of("input_audio_buffer.committed"))
    completed = len(received.of("conversation.item.input_audio_transcription.completed"))
    # No speech is open: the last word on speech, if any (manual commits have none), is not a
    # start. (Counting starts against stops would not do: a turn cut at REALTIME_MAX_TURN_S is
    # committed while the speech goes on, and the next turn starts without a stop before it.)
    speech = [
        kind
        for _, event in received.events
        if (kind := event["type"]).startswith("input_audio_buffer.speech_")
    ]
    return (
        committed > 0
        and committed == completed
        and speech[-1:] != ["input_audio_buffer.speech_started"]
    )
