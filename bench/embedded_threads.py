"""Speech events per minute in the embedded mode (workers as threads in the API process), with
the thread settings that scale mode's workers use against the defaults.

Scale mode runs one inference thread per worker process (bench/scale_bench.py). This asks
whether the embedded default gains from the same: each variant is one server (the documented
serve command, tiny.en on openai-whisper, jfk.wav speech events with the knowledge lookup on,
as scale_bench sends them), warmed up, then `--events` submitted at once and timed from the
first 202 to the last completion.

    uv run python -m bench.embedded_threads --events 30
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.server import ServerProcess
from tests.support.settings import AUTH, DATA, server_env

VARIANTS: dict[str, dict[str, str]] = {
    "defaults (1 worker thread, torch threads = cores)": {},
    "2 worker threads, 1 inference thread each": {
        "WORKER_CONCURRENCY": "2",
        "WHISPER_CPU_THREADS": "1",
        "LANCE_CPU_THREADS": "1",
    },
}


def speech_event(audio: str) -> dict[str, object]:
    data = {"audio_base64": audio, "language": "en", "lookup": True}
    return {"event_id": f"emb-{uuid.uuid4().hex[:12]}", "event_type": "speech", "event_data": data}


def run_batch(client: httpx.Client, audio: str, count: int) -> float:
    """Seconds from the first submission to the last completion of `count` events."""
    started = time.monotonic()
    ids = []
    for _ in range(count):
        response = client.post("/events/", json=speech_event(audio), headers=AUTH)
        response.raise_for_status()
        ids.append(response.json()["event_id"])
    pending = set(ids)
    while pending:
        time.sleep(0.05)
        for event_id in list(pending):
            status = client.get(f"/events/{event_id}", headers=AUTH).json()["status"]
            if status in ("completed", "failed"):
                assert status == "completed", event_id
                pending.discard(event_id)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30, help="measured per variant (30)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured first (2)")
    args = parser.parse_args()
    audio = base64.b64encode((DATA / "jfk.wav").read_bytes()).decode()
    for name, overrides in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            env = server_env(Path(tmp), **overrides)
            server = ServerProcess(env, Path(tmp) / "server.log")
            server.start()
            try:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    run_batch(client, audio, args.warmup)
                    load = Path("/proc/loadavg").read_text().split()[0]
                    seconds = run_batch(client, audio, args.events)
            finally:
                server.stop()
        print(f"{name}: {args.events / seconds * 60:.1f} events/min ({seconds:.1f} s), load {load}")


if __name__ == "__main__":
    main()
