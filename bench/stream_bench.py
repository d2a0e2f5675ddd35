"""Live-results benchmark: segment → subscriber/webhook latency, and fan-out throughput.

1. Latency (--events, default 100): the JFK clip is uploaded (lookup=false) one event at a
   time; for each, the time from the moment the worker decoded the event's last segment to
   (a) that segment reaching a WebSocket subscriber and (b) the signed webhook reaching a
   local receiver. The decode moment is taken inside the server by wrapping
   `StreamBus.publish` (the first thing that sees a segment), so the app runs in this process
   (uvicorn in a thread); clients and receiver are separate threads, all on one host clock.
2. Fan-out (--subscribers, default 50): one event, N real WebSocket subscribers (asyncio
   clients in a child process); bursts of segment messages are published into the server's bus
   from this process's main thread, each burst waited for at every subscriber (a burst stays
   under the per-subscriber buffer, so nobody is cut off). Reported: messages per second that
   every subscriber receives, and total deliveries per second.

Usage (repository root): uv run python -m bench.stream_bench [--events 100] [--engine ...]
Prints a Markdown section; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets
from websockets.sync.client import connect

from tests.support.ports import free_port
from tests.support.receivers import WebhookReceiver
from tests.support.server import HTTP_PROTOCOL

REPO = Path(__file__).resolve().parent.parent

TOKEN = "bench-token-0123456789"
CLIP = REPO / "tests" / "data" / "jfk.wav"
SECRET = "whsec_" + base64.b64encode(b"bench-webhook-signing-key-32byte").decode()


def start_server(
    tmp: Path, receiver: WebhookReceiver, engine: str
) -> tuple[str, Any, dict[Any, float]]:
    """The app in this process; returns its URL, its runtime and the segment decode times."""
    os.environ.update(
        {
            "API_TOKENS": TOKEN,
            "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
            "SPOOL_DIR": str(tmp / "spool"),
            "LANCEDB_URI": str(tmp / "lancedb_data"),
            "WHISPER_ENGINE": engine,
            "WHISPER_MODEL": "tiny.en",
            "WEBHOOK_URL": f"{receiver.url}/hook",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "LOG_LEVEL": "WARNING",
        }
    )
    shutil.copytree(REPO / "lancedb_data", tmp / "lancedb_data")
    import main
    from skyhigh.live.streams import StreamBus

    decoded: dict[Any, float] = {}
    original = StreamBus.publish

    def timed_publish(self: StreamBus, event_id: str, message: dict[str, Any]) -> None:
        if message.get("type") == "segment":
            decoded[(event_id, message["segment"]["id"])] = time.monotonic()
        original(self, event_id, message)

    StreamBus.publish = timed_publish  # type: ignore[method-assign]
    runtimes: list[Any] = []
    start_runtime = main.start_runtime
    main.start_runtime = lambda settings: runtimes.append(start_runtime(settings)) or runtimes[-1]
    app = main.create_app()
    port = free_port()
    # The documented serve command's protocol, in this process (the bench wraps the app).
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=HTTP_PROTOCOL, log_level="warning"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return url, runtimes[0], decoded
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(
    url: str, receiver: WebhookReceiver, decoded: dict[Any, float], events: int
) -> dict[str, Any]:
    ws_ms: list[float] = []
    hook_ms: list[float] = []
    audio = CLIP.read_bytes()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for index in range(events):
            event_id = f"lat-{index}"
            files = {"file": ("jfk.wav", audio, "audio/wav")}
            data = {"event_id": event_id, "lookup": "false", "language": "en"}
            assert http.post("/events/upload", files=files, data=data).status_code == 202
            arrivals: dict[int, float] = {}
            ws_url = url.replace("http", "ws") + f"/events/{event_id}/ws"
            with connect(ws_url, additional_headers=headers, proxy=None) as socket_:
                for raw in socket_:
                    now = time.monotonic()
                    message = json.loads(raw)
                    if message["type"] == "segment":
                        arrivals[message["segment"]["id"]] = now
            last = max(arrivals)
            decoded_at = decoded[(event_id, last)]
            ws_ms.append((arrivals[last] - decoded_at) * 1000)
            hook_ms.append((receiver.wait_for_event(event_id).at - decoded_at) * 1000)
    return {
        "events": events,
        "ws_p50": percentile(ws_ms, 0.5),
        "ws_p95": percentile(ws_ms, 0.95),
        "ws_max": max(ws_ms),
        "hook_p50": percentile(hook_ms, 0.5),
        "hook_p95": percentile(hook_ms, 0.95),
        "hook_max": max(hook_ms),
    }


def fan_out(url: str, runtime: Any, subscribers: int, bursts: int, burst: int) -> dict[str, Any]:
    """Publish bursts in the server; the subscribers run in their own process, like real ones."""
    from skyhigh.store.events import NewEvent

    event_id = "fanout-1"
    # Stored but never dispatched: it stays queued, so the stream stays open.
    runtime.store.create(NewEvent(event_id, "query", "0" * 64, {"text": "fan-out"}))
    ws_url = url.replace("http", "ws") + f"/events/{event_id}/ws"
    command = [
        sys.executable,
        "-m",
        "bench.stream_bench",
        "--clients",
        ws_url,
        str(subscribers),
        str(burst),
    ]
    clients = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert clients.stdout is not None
    assert clients.stdout.readline().strip() == "ready"
    streams = runtime.streams
    started = time.perf_counter()
    sent = 0
    for _ in range(bursts):
        for _ in range(burst):
            segment = {"id": sent, "start": 0.0, "end": 1.0, "text": "x" * 60}
            streams.publish(event_id, {"type": "segment", "segment": segment})
            sent += 1
        # Every subscriber has the whole burst before the next one: no buffer ever overflows.
        assert int(clients.stdout.readline()) == sent
    elapsed = time.perf_counter() - started
    streams.publish(event_id, {"type": "status", "status": "completed"})
    clients.wait(30)
    return {
        "subscribers": subscribers,
        "messages": sent,
        "seconds": elapsed,
        "per_subscriber_per_s": sent / elapsed,
        "deliveries_per_s": sent * subscribers / elapsed,
    }


def run_clients(ws_url: str, subscribers: int, burst: int) -> None:
    """Child process: N WebSocket subscribers; prints "ready", then each burst every one has."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    reached: dict[int, int] = {}

    async def subscriber(opened: list[int]) -> None:
        async with websockets.connect(ws_url, additional_headers=headers, proxy=None) as ws:
            await ws.recv()  # the current state
            opened.append(1)
            if len(opened) == subscribers:
                print("ready", flush=True)
            count = 0
            async for _ in ws:
                count += 1
                if count % burst == 0:
                    reached[count] = reached.get(count, 0) + 1
                    if reached[count] == subscribers:
                        print(count, flush=True)

    async def main() -> None:
        opened: list[int] = []
        await asyncio.gather(*(subscriber(opened) for _ in range(subscribers)))

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--bursts", type=int, default=25)
    parser.add_argument("--burst", type=int, default=200, help="messages per burst (< buffer)")
    parser.add_argument("--engine", default="faster-whisper")
    parser.add_argument("--clients", nargs=3, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.clients:
        run_clients(args.clients[0], int(args.clients[1]), int(args.clients[2]))
        return

    receiver = WebhookReceiver()
    with tempfile.TemporaryDirectory() as tmp:
        url, runtime, decoded = start_server(Path(tmp), receiver, args.engine)
        lat = latency(url, receiver, decoded, args.events)
        fan = fan_out(url, runtime, args.subscribers, args.bursts, args.burst)

    cpu = platform.processor() or platform.machine()
    print(f"\n## Live results: streams and webhooks ({time.strftime('%Y-%m-%d')})\n")
    print(
        f"`uv run python -m bench.stream_bench --events {args.events} --engine {args.engine}` "
        f"on {os.cpu_count()} CPU cores ({cpu}, shared with other work), tiny.en, "
        "JFK clip (11 s), `lookup=false`, SQLite `synchronous=FULL`, one worker.\n"
    )
    print("| from the last decoded segment to | p50 | p95 | max |")
    print("|---|---|---|---|")
    print(
        f"| its arrival at a WebSocket subscriber | {lat['ws_p50']:.1f} ms | "
        f"{lat['ws_p95']:.1f} ms | {lat['ws_max']:.1f} ms |"
    )
    print(
        f"| the signed webhook at a local receiver | {lat['hook_p50']:.1f} ms | "
        f"{lat['hook_p95']:.1f} ms | {lat['hook_max']:.1f} ms |"
    )
    print(
        f"\nFan-out: {fan['subscribers']} WebSocket subscribers on one event, "
        f"{fan['messages']} segment messages in bursts of {args.burst}: "
        f"**{fan['per_subscriber_per_s']:.0f} messages/s** reach every subscriber "
        f"({fan['deliveries_per_s']:.0f} deliveries/s in total).\n"
    )


if __name__ == "__main__":
    main()
