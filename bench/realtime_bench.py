"""Realtime transcription: latency of deltas and finals, WER against an upload, concurrency.

Starts the service (documented serve command, REALTIME_ENABLED) for each realtime model and
streams a real recording at real-time pace in 100 ms appends through the official openai SDK,
with 1..N sessions at once. Per session count it reports:

- first delta after speech start: time from the append that carried the VAD's speech start
  (audio_start_ms + prefix padding, in stream time) to the turn's first delta;
- final after VAD stop: from the append that carried the stop (audio_end_ms + silence
  duration) to the turn's `completed` event;
- lag: whether finals keep up (the last turn's final latency against the first's);
- WER of the joined completed text against the same file as an upload to the same server.

    uv run python -m bench.realtime_bench --models tiny.en base --sessions 1 2 3

`--variant NAME:KEY=VALUE,...` (repeatable) runs each model once more per variant with those
settings on top (e.g. `--variant first:REALTIME_FIRST_DECODE_MS=400`), to measure one change
against the defaults on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.speech_helpers import normalise, wer
from tests.support.client import wait_terminal
from tests.support.realtime import (
    Listener,
    Received,
    client,
    pcm16,
    session_update,
    stream,
    turns_settled,
)
from tests.support.server import ServerProcess
from tests.support.settings import AUTH, DATA, TOKENS, server_env

PCM24 = 48_000
PREFIX_MS, SILENCE_MS = 300, 500


def _session(url: str, audio: bytes, out: dict[str, Any], silence_ms: int = SILENCE_MS) -> None:
    connect = client(url, TOKENS[0]).realtime.connect(extra_query={"intent": "transcription"})
    with connect as connection:
        listener = Listener(connection)
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: bool(r.of("session.updated")))
        # Enough trailing silence for the VAD to close the last turn at this silence duration.
        started = stream(
            connection, audio, PCM24, pace=1.0, trailing_silence_s=silence_ms / 1000 + 1.5
        )
        received = listener.wait_for(turns_settled, timeout_s=120)
    # First delta: from when speech was heard (the VAD's start plus its prefix padding).
    first_delta = _latencies(
        received, started, "speech_started", "audio_start_ms", PREFIX_MS, "delta"
    )
    # Final: from when the VAD could close the turn (its stop plus the silence it waits for).
    final = _latencies(received, started, "speech_stopped", "audio_end_ms", silence_ms, "completed")
    out.update(first_delta=first_delta, final=final, text=received.completed_text)


def _latencies(
    received: Received, started: float, mark: str, at: str, offset_ms: int, reply: str
) -> list[float]:
    """Per turn: seconds from the audio time of its `input_audio_buffer.<mark>` event (`at`,
    plus `offset_ms`; stream time since `started`) to its first `...transcription.<reply>`."""
    latencies = []
    for event in received.of(f"input_audio_buffer.{mark}"):
        expected = started + (event[at] + offset_ms) / 1000
        replies = [
            arrived
            for arrived, e in received.events
            if e["type"].endswith(f"transcription.{reply}") and e["item_id"] == event["item_id"]
        ]
        if replies:
            latencies.append(replies[0] - expected)
    return latencies


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3), "n": len(values)}


def _upload_text(url: str, recording: Path) -> str:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        files = {"file": (recording.name, recording.read_bytes())}
        response = http.post("/events/upload", files=files, data={"event_id": "bench-upload"})
        assert response.status_code == 202, response.text
        record = wait_terminal(http.get, "bench-upload")
    return str(record["result"]["transcript"]["text"])


def run_model(
    model: str,
    counts: list[int],
    recording: Path,
    reference: str,
    variant: tuple[str, dict[str, str]] = ("defaults", {}),
) -> dict[str, Any]:
    name, extra = variant
    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(
            Path(tmp),
            REALTIME_ENABLED="true",
            REALTIME_MODEL=model,
            REALTIME_MAX_SESSIONS=str(max(counts)),
            REALTIME_SESSIONS_PER_PRINCIPAL=str(max(counts)),
            REALTIME_MAX_LAG_S="60",
            EMBEDDING_BACKEND="torch",
            WHISPER_ENGINE="faster-whisper",
            **extra,
        )
        server = ServerProcess(env, Path(tmp) / "server.log")
        server.start()
        try:
            audio = pcm16(recording)
            upload = _upload_text(server.url, recording)
            results: dict[str, Any] = {
                "model": model,
                "variant": name,
                "settings": extra,
                "upload_wer": wer(reference, upload),
            }
            for count in counts:
                outs: list[dict[str, Any]] = [{} for _ in range(count)]
                silence = int(extra.get("REALTIME_SILENCE_DURATION_MS", SILENCE_MS))
                threads = [
                    threading.Thread(target=_session, args=(server.url, audio, out, silence))
                    for out in outs
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                results[str(count)] = {
                    "first_delta_s": _percentiles([v for o in outs for v in o["first_delta"]]),
                    "final_s": _percentiles([v for o in outs for v in o["final"]]),
                    "last_final_s": [
                        round(o["final"][-1], 3) if o["final"] else None for o in outs
                    ],
                    "wer": [round(wer(reference, o["text"]), 4) for o in outs],
                    "load1": Path("/proc/loadavg").read_text().split()[0],
                }
                print(json.dumps({f"{model} {name}": {count: results[str(count)]}}), flush=True)
        finally:
            server.stop()
    return results


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    settings = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    return name, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en"])
    parser.add_argument("--sessions", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--recording", type=Path, default=DATA / "sonnet1.flac")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variant", action="append", default=[], type=_variant)
    parser.add_argument("--no-defaults", action="store_true", help="only the variants")
    args = parser.parse_args()
    reference_file = args.recording.with_suffix(".txt")
    reference = normalise(reference_file.read_text())
    variants = ([] if args.no_defaults else [("defaults", {})]) + args.variant
    results = [
        run_model(m, args.sessions, args.recording, reference, v)
        for m in args.models
        for v in variants
    ]
    print(json.dumps(results, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
