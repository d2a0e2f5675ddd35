"""Fair claims in scale mode: how long one principal's query waits behind another's backlog.

A throwaway Redis and Postgres (bench/scale_bench.py's Backends), one API in JWT mode and two
event workers (`python -m skyhigh.worker -Q events`, one inference thread each). Principal
`alice` sends a backlog of long uploads (tests/data/sonnet1.flac, 53 s of speech, each its own
speech event); once both workers are busy with it, principal `bob` sends one query. Reported,
from the events' own timestamps: bob's wait (accepted -> started) and accepted -> completed,
how many of alice's events started before his, and how long alice's backlog took to drain
(what a first-in-first-out queue would have made him wait).

Usage (from the repository root; needs redis-server and postgresql):

    uv run python -m bench.fairness_bench                 # a backlog of 6 uploads
    uv run python -m bench.fairness_bench --backlog 4

Prints a Markdown table and the 1-minute load; writes nothing else.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench import intake_load
from bench.scale_bench import (
    REPO,
    Backends,
    Process,
    api_ready,
    fleet_env,
    moment,
    start_worker,
    wait_workers,
)
from tests.support.ports import free_port
from tests.support.server import serve_command

SECRET = "fairness-bench-secret-0123456789abcdef"
CLIP = REPO / "tests" / "data" / "sonnet1.flac"


def bearer(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def wait_for(client: httpx.Client, event_id: str, headers: dict[str, str]) -> dict[str, Any]:
    while True:
        record: dict[str, Any] = client.get(f"/events/{event_id}", headers=headers).json()
        if record["status"] in intake_load.TERMINAL:
            return record
        time.sleep(0.2)


def run(client: httpx.Client, backlog: int) -> dict[str, Any]:
    alice, bob = bearer("alice"), bearer("bob")
    audio = base64.b64encode(CLIP.read_bytes()).decode()
    ids = [f"long-{index}" for index in range(backlog)]
    for event_id in ids:
        body = {"event_id": event_id, "event_type": "speech", "event_data": {"audio_base64": audio}}
        client.post("/events/", json=body, headers=alice).raise_for_status()
    while (
        sum(client.get(f"/events/{i}", headers=alice).json()["status"] == "processing" for i in ids)
        < 2
    ):
        time.sleep(0.1)
    body = {"event_id": "bob-query", "event_type": "query", "event_data": {"text": "pets"}}
    client.post("/events/", json=body, headers=bob).raise_for_status()
    query = wait_for(client, "bob-query", bob)
    records = [wait_for(client, event_id, alice) for event_id in ids]
    started = moment(query["started_at"])
    return {
        "bob_wait_s": started - moment(query["created_at"]),
        "bob_done_s": moment(query["finished_at"]) - moment(query["created_at"]),
        "started_before": sum(moment(r["started_at"]) < started for r in records),
        "drain_s": max(moment(r["finished_at"]) for r in records) - moment(query["created_at"]),
        "upload_s": statistics.median(
            moment(r["finished_at"]) - moment(r["started_at"]) for r in records
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=6)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--engine", default="openai-whisper")
    parser.add_argument("--startup-timeout", type=float, default=300)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    with Backends() as backends, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = fleet_env(workdir, backends.redis.url, backends.fresh(), args)
        env |= {"AUTH_MODE": "jwt", "JWT_SECRET": SECRET, "MAX_AUDIO_SECONDS": "600"}
        port = free_port()
        api = Process("api", serve_command(port), env, workdir / "api.log")
        workers = [start_worker(env, workdir, index) for index in (1, 2)]
        base = f"http://{intake_load.HOST}:{port}"
        try:
            api.start()
            api_ready(base, api, args.startup_timeout)
            wait_workers(backends.redis.url, workers, args.startup_timeout)
            with httpx.Client(base_url=base, timeout=60) as client:
                result = run(client, args.backlog)
        except BaseException:
            for process in (api, *workers):
                print(process.log.read_text(errors="replace")[-2000:], file=sys.stderr)
            raise
        finally:
            for process in (*workers, api):
                process.stop()
    print(
        "| backlog (uploads of 53 s) | workers | bob's query: accepted -> started | "
        "accepted -> completed | backlog events started before it | backlog drained after "
        "| one upload (median) | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.backlog} | 2 | {result['bob_wait_s']:.2f} s | {result['bob_done_s']:.2f} s | "
        f"{result['started_before']} | {result['drain_s']:.1f} s | {result['upload_s']:.1f} s "
        f"| {os.getloadavg()[0]:.2f} |"
    )


if __name__ == "__main__":
    main()
