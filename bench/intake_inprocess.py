"""POST /events/ driven in process: the request path's own cost, without sockets, uvicorn or wrk.

`intake_load` measures what a client sees, but wrk and the server share two cores and its
rounds move by 20-30 % on this machine. This drives the app's ASGI callable directly (the
edge middleware, the submit path, intake, the group commit on its thread, the embedded worker
on its thread) from `--connections` coroutines, each sending its next query event when the
last one is answered, like wrk's connections. It prints requests per second and the event
loop thread's CPU per request, with the embedded worker running and, for comparison, with its
threads never started (what the worker's share of the GIL costs the loop). `worker` runs the
default burst gate, which this flood trips (the worker then starts few events:
skyhigh.processing.burst_gate); `worker-ungated` turns it off (WORKER_YIELD_RATE=0), the
worker as it was before the gate.

    uv run python -m bench.intake_inprocess                 # all three variants, 3 rounds each
    uv run python -m bench.intake_inprocess --requests 40000 --rounds 5 --variants worker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from main import create_app
from skyhigh.processing.dispatch import InProcessDispatcher
from tests.support.settings import TOKENS, make_settings

QUERY = {"text": "How many checked bags are free on a Classic fare?", "k": 3}
VARIANTS = ("worker", "worker-ungated", "no-worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per round, after warm-up")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in args.variants}
    for index in range(args.rounds):  # variants alternate, so drift hits both alike
        for variant in args.variants:
            result = asyncio.run(_round(variant, args.requests, args.connections))
            results[variant].append(result)
            print(f"round {index + 1} {variant}: {json.dumps(result)}", flush=True)
    for variant, rounds in results.items():
        rps = statistics.median(r["requests_per_s"] for r in rounds)
        cpu = statistics.median(r["loop_cpu_us_per_request"] for r in rounds)
        print(f"{variant}: median {rps:.0f} req/s, event loop CPU {cpu:.1f} us/request")


async def _round(variant: str, requests: int, connections: int) -> dict[str, float]:
    with (
        _worker_threads(started=variant != "no-worker"),
        tempfile.TemporaryDirectory(prefix="intake-inprocess-") as tmp,
    ):
        settings = make_settings(
            Path(tmp),
            log_level="WARNING",
            max_pending_events=10_000_000,
            **({"worker_yield_rate": 0} if variant == "worker-ungated" else {}),
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app) as state:
            send = _client(app, state)
            await _drive(send, "warm", 50 * connections, connections)
            load = os.getloadavg()[0]
            started, cpu = time.perf_counter(), time.thread_time()
            statuses = await _drive(send, "run", requests, connections)
            wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
    if statuses != {202: requests}:
        raise SystemExit(f"{variant}: not every request was accepted: {statuses}")
    return {
        "requests_per_s": round(requests / wall),
        "loop_cpu_us_per_request": round(cpu / requests * 1e6, 1),
        "load_1min": round(load, 2),
    }


@contextmanager
def _worker_threads(*, started: bool) -> Iterator[None]:
    """With started=False the embedded worker's threads never start (events stay queued)."""
    original = InProcessDispatcher._work
    if not started:
        InProcessDispatcher._work = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        InProcessDispatcher._work = original  # type: ignore[method-assign]


def _client(app: Any, state: Any) -> Callable[[str], Any]:
    """`send(event_id)`: one POST /events/ through the ASGI app; returns the status code."""
    authorization = f"Bearer {TOKENS[0]}".encode()

    async def send(event_id: str) -> int:
        event = {"event_id": event_id, "event_type": "query", "event_data": QUERY}
        raw = json.dumps(event).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/events/",
            "raw_path": b"/events/",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"authorization", authorization),
                (b"content-length", str(len(raw)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": dict(state),
        }
        status = 0
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.Event().wait()  # a client that stays connected
            raise AssertionError("unreachable")

        async def respond(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, respond)
        return status

    return send


async def _drive(
    send: Callable[[str], Any], prefix: str, requests: int, connections: int
) -> dict[int, int]:
    statuses: dict[int, int] = {}

    async def connection(index: int) -> None:
        for number in range(index, requests, connections):
            status = await send(f"{prefix}-{number}")
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(connection(index) for index in range(connections)))
    return statuses


if __name__ == "__main__":
    main()
