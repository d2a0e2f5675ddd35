"""Load benchmark of POST /events/ intake: SkyHigh against the seed's bare handler.

Each target is started in turn as its own uvicorn subprocess (same settings for all), driven
by `wrk` with bench/intake_load.lua (a unique query event per request, bearer header
included), then stopped. SkyHigh targets also get an accept→completed phase: N query events
sent a few at a time on the idle server, each polled until it finishes, latency taken from
the event's own `created_at`/`finished_at`.

Usage (from the repository root; needs `wrk`, e.g. `apt-get install -y wrk`):

    uv run python -m bench.intake_load
    uv run python -m bench.intake_load --targets skyhigh bare skyhigh-normal --duration 20
    uv run python -m bench.intake_load --targets skyhigh-scale bare \
        --queue-url redis://127.0.0.1:6379/0 --database-url postgresql+psycopg://...
    .venv/bin/python bench/intake_load.py --targets skyhigh-scale bare --throwaway-services

`skyhigh-scale` is the API in scale-out mode (QUEUE_URL + a Postgres DATABASE_URL) with no
worker running: it only authenticates, validates, stores and enqueues. bench/scale_bench.py
starts a throwaway Redis and Postgres and drives this target; so does `--throwaway-services`
(tests/services.py's servers, Postgres durable as in production).

Writes bench/results/intake_load.json and .md (see --out). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().parent / "intake_load.lua"
HOST = "127.0.0.1"
TOKEN = "bench-token-123456789"
QUERY_TEXT = "How many checked bags are free on a Classic fare?"
UVICORN_FLAGS = ["--log-level", "warning", "--no-access-log"]
# SkyHigh is served as documented (README, Dockerfile): with the protocol that caps request
# heads. The bare handler keeps plain uvicorn, as the seed ran it.
SKYHIGH_HTTP = ["--http", "skyhigh.api.http_server:HttpProtocol"]
TERMINAL = {"completed", "failed"}

# --- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    app: str  # uvicorn import string, resolved from the repository root
    env: dict[str, str] = field(default_factory=dict)
    skyhigh: bool = True
    completes: bool = True  # its own process works the events off (not skyhigh-scale)
    database_url: str | None = None  # where its events are, when not workdir/events.db


def skyhigh_env(workdir: Path, synchronous: str | None) -> dict[str, str]:
    env = {
        "API_TOKENS": TOKEN,
        "DATABASE_URL": f"sqlite:///{workdir}/events.db",
        "SPOOL_DIR": str(workdir / "spool"),
        "WHISPER_MODEL": "tiny.en",
        "MAX_PENDING_EVENTS": "10000000",
        "LOG_LEVEL": "WARNING",
    }
    if synchronous is not None:
        env["SQLITE_SYNCHRONOUS"] = synchronous
    return env


def scale_env(workdir: Path, queue_url: str, database_url: str) -> dict[str, str]:
    """The API in scale-out mode: the same settings, plus the broker and a shared store."""
    lancedb = workdir / "lancedb_data"  # its own copy: the committed one stays untouched
    shutil.copytree(REPO / "lancedb_data", lancedb)
    env = skyhigh_env(workdir, None)
    env.update({"QUEUE_URL": queue_url, "DATABASE_URL": database_url, "LANCEDB_URI": str(lancedb)})
    return env


def make_target(
    name: str, workdir: Path, *, queue_url: str | None = None, database_url: str | None = None
) -> Target:
    if name == "bare":
        description = "seed's bare handler, bench/bare_app.py"
        return Target(name, description, "bench.bare_app:app", {}, skyhigh=False)
    if name == "skyhigh":
        return Target(name, "SkyHigh, default settings", "main:app", skyhigh_env(workdir, None))
    if name == "skyhigh-normal":
        return Target(
            name, "SkyHigh, SQLITE_SYNCHRONOUS=NORMAL", "main:app", skyhigh_env(workdir, "NORMAL")
        )
    if name == "skyhigh-scale":
        if queue_url is None or database_url is None:
            raise ValueError("--targets skyhigh-scale needs --queue-url and --database-url")
        description = "SkyHigh scale-out API (Redis + Postgres), no worker"
        env = scale_env(workdir, queue_url, database_url)
        return Target(
            name, description, "main:app", env, completes=False, database_url=database_url
        )
    raise ValueError(f"unknown target {name!r}")


TARGET_NAMES = ("skyhigh", "bare", "skyhigh-normal")
SCALE_TARGET = "skyhigh-scale"  # not a default: it needs a broker and Postgres

# --- server process ------------------------------------------------------------------------


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before /health answered")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{base}/health did not answer 200 within {timeout_s:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def running_server(
    target: Target, workdir: Path, startup_timeout_s: float
) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    """Start uvicorn for target; yield (base URL, process, startup seconds); always stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", target.app, "--host", HOST, "--port", str(port)]
    if target.skyhigh:
        cmd += SKYHIGH_HTTP
    env = {**os.environ, **target.env}
    log_path = workdir / f"{target.name}.server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*cmd, *UVICORN_FLAGS],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop_process signals it as a whole
        )
        try:
            startup_s = wait_healthy(f"http://{HOST}:{port}", proc, startup_timeout_s)
            yield f"http://{HOST}:{port}", proc, startup_s
        except BaseException:
            tail = log_path.read_text(errors="replace")[-3000:]
            print(f"[{target.name}] server log tail:\n{tail}", file=sys.stderr)
            raise
        finally:
            stop_process(proc)


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    requests_per_s: float
    non_2xx: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]


def run_wrk(base: str, args: argparse.Namespace, duration_s: float, run_id: str) -> LoadResult:
    cmd = [
        args.wrk,
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={duration_s:g}s",
        f"--timeout={args.wrk_timeout:g}s",
        "--latency",
        f"--script={LUA_SCRIPT}",
        f"{base}/events/",
        "--",
        TOKEN,
        run_id,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration_s + 120)
    return parse_wrk(done.stdout)


def parse_wrk(stdout: str) -> LoadResult:
    match = re.search(r"^WRK_JSON (\{.*\})$", stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no WRK_JSON line in wrk output:\n{stdout}")
    raw = json.loads(match.group(1))
    duration_s = raw["duration_us"] / 1e6
    errors = dict(raw["errors"])
    non_2xx = errors.pop("status")
    latency_ms = {key: value / 1000 for key, value in raw["latency_us"].items()}
    return LoadResult(
        requests=raw["requests"],
        duration_s=round(duration_s, 3),
        requests_per_s=round((raw["requests"] - non_2xx) / duration_s, 1),
        non_2xx=non_2xx,
        socket_errors=errors,
        latency_ms={key: round(value, 2) for key, value in latency_ms.items()},
    )


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()


# --- SkyHigh accounting --------------------------------------------------------------------


def scrape_counts(base: str) -> dict[str, float]:
    """Accepted/completed/failed counters and queue depth from /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    wanted = {
        "skyhigh_events_accepted_total": "accepted",
        "skyhigh_events_completed_total": "completed",
        "skyhigh_events_failed_total": "failed",
        "skyhigh_queue_depth": "pending",
    }
    counts = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        if name in wanted and not line.startswith("#"):
            counts[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return counts


def processing_rate(base: str, sample_s: float) -> tuple[dict[str, float], float]:
    """Counts after sample_s more seconds, and events finished per second meanwhile."""
    before = scrape_counts(base)
    time.sleep(sample_s)
    after = scrape_counts(base)
    finished = after["completed"] + after["failed"] - before["completed"] - before["failed"]
    return after, finished / sample_s


def statuses_in_db(workdir: Path) -> dict[str, int]:
    """Rows per status in the store, read after the server stopped (what was made durable)."""
    with sqlite3.connect(workdir / "events.db") as db:
        rows = db.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall()
    return dict(rows)


def statuses_in_database(database_url: str, run_id: str) -> dict[str, int]:
    """Rows per status of this run's events in a shared store (skyhigh-scale)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT status, COUNT(*) FROM events WHERE event_id LIKE :ids GROUP BY status"
                ),
                {"ids": f"{run_id}-%"},
            ).all()
    finally:
        engine.dispose()
    return {str(status): int(count) for status, count in rows}


def durability_check(result: dict[str, Any], statuses: dict[str, int]) -> dict[str, Any]:
    """Every 202 the clients got must be a row in the store after the server stopped."""
    answered = result["load"]["requests"] - result["load"]["non_2xx"]
    if "warmup" in result:
        answered += result["warmup"]["requests"] - result["warmup"]["non_2xx"]
    answered += result.get("completion", {}).get("events", 0)
    rows = sum(statuses.values())
    # rows may exceed the 202s by up to one request per connection per wrk run: requests in
    # flight when wrk stops are stored, but wrk no longer counts their answers.
    return {
        "accepted_by_clients": answered,
        "rows_in_store": rows,
        "no_202_lost": rows >= answered,
        "statuses": statuses,
    }


# --- accept → completed --------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def one_event(
    client: httpx.AsyncClient, event_id: str, poll_s: float, timeout_s: float
) -> dict[str, Any]:
    sent = time.perf_counter()
    body = {"event_id": event_id, "event_type": "query", "event_data": {"text": QUERY_TEXT, "k": 3}}
    accepted = await client.post("/events/", json=body)
    accepted.raise_for_status()
    deadline = sent + timeout_s
    while time.perf_counter() < deadline:
        record = (await client.get(f"/events/{event_id}")).raise_for_status().json()
        if record["status"] in TERMINAL:
            record["client_s"] = time.perf_counter() - sent
            return dict(record)
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"event {event_id} not finished after {timeout_s} s")


async def completion_phase(base: str, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    ids: asyncio.Queue[str] = asyncio.Queue()
    for index in range(args.completion_events):
        ids.put_nowait(f"{run_id}-c{index}")
    records: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not ids.empty():
            event_id = ids.get_nowait()
            records.append(await one_event(client, event_id, args.poll_interval, 60.0))

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.completion_concurrency)))
    return summarize_completion(records)


def summarize_completion(records: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(key: str, start: str, end: str) -> dict[str, float]:
        values = [seconds_between(r[start], r[end]) for r in records]
        ms = [v * 1000 for v in values if v is not None]
        return {
            f"{key}_p50_ms": round(percentile(ms, 50), 1),
            f"{key}_p95_ms": round(percentile(ms, 95), 1),
        }

    client_ms = [r["client_s"] * 1000 for r in records]
    return {
        "events": len(records),
        "completed": sum(r["status"] == "completed" for r in records),
        **stats("accept_to_completed", "created_at", "finished_at"),
        **stats("queue_wait", "created_at", "started_at"),
        **stats("processing", "started_at", "finished_at"),
        "client_observed_p50_ms": round(percentile(client_ms, 50), 1),
        "client_observed_p95_ms": round(percentile(client_ms, 95), 1),
    }


# --- one target ----------------------------------------------------------------------------


def bench_target(name: str, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"intake-{name}-"))
    target = make_target(name, workdir, queue_url=args.queue_url, database_url=args.database_url)
    result: dict[str, Any] = {
        "target": name,
        "description": target.description,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with running_server(target, workdir, args.startup_timeout) as (base, _proc, startup_s):
            result["startup_s"] = round(startup_s, 1)
            print(f"[{name}] up in {startup_s:.1f} s at {base}", flush=True)
            if target.skyhigh and target.completes and args.completion_events > 0:
                result["completion"] = asyncio.run(completion_phase(base, args, run_id))
                print(f"[{name}] accept→completed: {result['completion']}", flush=True)
            if args.warmup > 0:
                result["warmup"] = asdict(run_wrk(base, args, args.warmup, f"{run_id}-warm"))
            load = run_wrk(base, args, args.duration, f"{run_id}-load")
            result["load"] = asdict(load)
            print(f"[{name}] load: {result['load']}", flush=True)
            if target.skyhigh:
                result["after_load"] = skyhigh_after_load(base, args, completes=target.completes)
        if target.database_url is not None:
            statuses = statuses_in_database(target.database_url, run_id)
            result["durability"] = durability_check(result, statuses)
        elif target.skyhigh:
            result["durability"] = durability_check(result, statuses_in_db(workdir))
    finally:
        if args.keep_workdir:
            print(f"[{name}] kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def skyhigh_after_load(
    base: str, args: argparse.Namespace, *, completes: bool = True
) -> dict[str, Any]:
    """What the workers had done when the load stopped, and how fast they go on alone."""
    at_end = scrape_counts(base)
    result: dict[str, Any] = {"at_load_end": {key: int(value) for key, value in at_end.items()}}
    if args.drain_sample > 0 and completes:
        later, rate = processing_rate(base, args.drain_sample)
        result["processing_per_s_after_load"] = round(rate, 1)
        result["est_drain_s"] = round(later["pending"] / rate) if rate > 0 else None
    return result


# --- report --------------------------------------------------------------------------------


def ratios(results: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each SkyHigh target against the bare handler: paired per round, then the median."""
    bare = {r["round"]: r["load"] for r in results if r["target"] == "bare"}
    per_target: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r["target"] != "bare" and r["round"] in bare:
            base = bare[r["round"]]
            rps = r["load"]["requests_per_s"] / base["requests_per_s"]
            p99 = r["load"]["latency_ms"]["p99"] / base["latency_ms"]["p99"]
            per_target.setdefault(r["target"], []).append((rps, p99))
    rows = []
    for target, pairs in per_target.items():
        rps = statistics.median(pair[0] for pair in pairs)
        p99 = statistics.median(pair[1] for pair in pairs)
        rows.append(
            {
                "target": target,
                "rounds": len(pairs),
                "rps_ratio": round(rps, 3),
                "rps_target_met": rps >= args.rps_target,
                "p99_ratio": round(p99, 3),
                "p99_target_met": p99 <= args.p99_target,
            }
        )
    return rows


def load_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: the median over rounds of req/s, p50 and p99 (and each round's req/s)."""
    rows = []
    for target in dict.fromkeys(r["target"] for r in results):
        loads = [r["load"] for r in results if r["target"] == target]
        rows.append(
            {
                "target": target,
                "description": next(r["description"] for r in results if r["target"] == target),
                "rounds": len(loads),
                "requests_per_s": statistics.median(x["requests_per_s"] for x in loads),
                "p50_ms": statistics.median(x["latency_ms"]["p50"] for x in loads),
                "p99_ms": statistics.median(x["latency_ms"]["p99"] for x in loads),
                "requests_per_s_each": [x["requests_per_s"] for x in loads],
                "non_2xx": sum(x["non_2xx"] for x in loads),
                "socket_errors": sum(sum(x["socket_errors"].values()) for x in loads),
            }
        )
    return rows


def git_describe() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": wrk_version(args.wrk),
        "uvicorn": f"{sys.executable} -m uvicorn <app> --host {HOST} --port <free> "
        + " ".join(UVICORN_FLAGS)
        + f" (SkyHigh targets add {' '.join(SKYHIGH_HTTP)})",
        "load": f"wrk --threads={args.threads} --connections={args.connections} "
        f"--duration={args.duration:g}s --latency -s bench/intake_load.lua "
        f"(warm-up {args.warmup:g} s first, same flags)",
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "code": git_describe(),
        "note": "wrk and the server share the same CPUs; other work on the machine adds noise",
        "rps_target": args.rps_target,
        "p99_target": args.p99_target,
    }


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Machine: {env['cpus']} CPUs, {env['platform']}, Python {env['python']}, {env['wrk']}; "
        f"code {env['code']}; started {env['started']}.",
        f"Server: `{env['uvicorn']}`. Load: `{env['load']}`. {env['note']}: 1-min load "
        f"average before the runs {_loadavg_range(report['results'])} on {env['cpus']} CPUs.",
        "",
        "| target | rounds | req/s (median; each round) | p50 ms | p99 ms | non-2xx | "
        "socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["summary"]:
        each = ", ".join(f"{x:.0f}" for x in row["requests_per_s_each"])
        lines.append(
            f"| {row['target']} ({row['description']}) | {row['rounds']} | "
            f"{row['requests_per_s']:.0f} ({each}) | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{row['non_2xx']} | {row['socket_errors']} |"
        )
    if report["ratios"]:
        lines += [
            "",
            f"| vs bare (paired per round, median) | req/s ratio (target ≥ {env['rps_target']}) "
            f"| p99 ratio (target ≤ {env['p99_target']}) |",
            "|---|---:|---:|",
        ]
        for q in report["ratios"]:
            lines.append(
                f"| {q['target']} | {q['rps_ratio']:.3f} ({_met(q['rps_target_met'])}) | "
                f"{q['p99_ratio']:.1f} ({_met(q['p99_target_met'])}) |"
            )
    lines += _completion_lines(report["results"])
    lines += _backlog_lines(report["results"])
    return "\n".join(lines) + "\n"


def _loadavg_range(results: list[dict[str, Any]]) -> str:
    values = [r["loadavg_before"][0] for r in results]
    return f"{min(values):.1f}–{max(values):.1f}"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _completion_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Accept→completed, query events on the idle server (from the event's own timestamps):",
        "",
        "| target | events | accept→completed p50 / p95 ms | queue wait p50 / p95 ms | "
        "processing p50 / p95 ms | client-observed p50 / p95 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.get("completion")
        if c is not None:
            lines.append(_completion_row(_label(r), c))
    for target, stats in completion_medians(results).items():
        lines.append(_completion_row(f"**{target}, median of rounds**", stats))
    return lines if len(lines) > 6 else []


def _completion_row(label: str, c: dict[str, Any]) -> str:
    return (
        f"| {label} | {c['events']} | {_pair(c, 'accept_to_completed')} | "
        f"{_pair(c, 'queue_wait')} | {_pair(c, 'processing')} | {_pair(c, 'client_observed')} |"
    )


def completion_medians(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target with more than one round: each percentile's median over the rounds."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "completion" in r:
            by_target.setdefault(r["target"], []).append(r["completion"])
    medians: dict[str, dict[str, Any]] = {}
    for target, runs in by_target.items():
        if len(runs) < 2:
            continue
        merged: dict[str, Any] = {"events": sum(run["events"] for run in runs)}
        for key in (k for k in runs[0] if k.endswith("_ms")):
            merged[key] = statistics.median(run[key] for run in runs)
        medians[target] = merged
    return medians


def _label(result: dict[str, Any]) -> str:
    return f"{result['target']} (round {result['round']})"


def _pair(stats: dict[str, Any], key: str) -> str:
    return f"{stats[key + '_p50_ms']:.0f} / {stats[key + '_p95_ms']:.0f}"


def _backlog_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Workers during and after the load (the same process embeds the accepted query events; "
        "counters since server start, so they include the accept→completed events and the "
        "warm-up; rows may exceed 202s by the requests in flight when wrk stopped):",
        "",
        "| target | accepted at load end | finished at load end | pending | "
        "processed/s after load | est. drain s | 202s answered | rows in store |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        after, durable = r.get("after_load"), r.get("durability")
        if after is None or durable is None:
            continue
        end = after["at_load_end"]
        lines.append(
            f"| {_label(r)} | {end['accepted']} | {end['completed'] + end['failed']} | "
            f"{end['pending']} | {after.get('processing_per_s_after_load', '-')} | "
            f"{after.get('est_drain_s', '-')} | {durable['accepted_by_clients']} | "
            f"{durable['rows_in_store']} ({'ok' if durable['no_202_lost'] else 'LOST'}) |"
        )
    return lines if len(lines) > 5 else []


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=(*TARGET_NAMES, SCALE_TARGET),
        default=list(TARGET_NAMES),
        help="servers to measure, in this order (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat all targets N times")
    parser.add_argument("--queue-url", help="skyhigh-scale: QUEUE_URL (redis://...)")
    parser.add_argument(
        "--database-url", help="skyhigh-scale: DATABASE_URL (postgresql+psycopg://...)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (20)")
    parser.add_argument("--connections", type=int, default=32, help="open connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured wrk seconds first")
    parser.add_argument("--wrk", default="wrk", help="path of the wrk binary")
    parser.add_argument("--wrk-timeout", type=float, default=10.0, help="wrk socket timeout, s")
    parser.add_argument("--startup-timeout", type=float, default=240.0, help="/health wait, s")
    parser.add_argument("--completion-events", type=int, default=100, help="phase-2 events")
    parser.add_argument("--completion-concurrency", type=int, default=4, help="phase-2 clients")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="phase-2 poll, s")
    parser.add_argument(
        "--drain-sample",
        type=float,
        default=10.0,
        help="after the load, watch SkyHigh's workers this many seconds (0: don't)",
    )
    parser.add_argument("--rps-target", type=float, default=0.8, help="min req/s ratio")
    parser.add_argument("--p99-target", type=float, default=1.25, help="max p99 ratio")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "intake_load",
        help="write <out>.json and <out>.md",
    )
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: re-render a report this script wrote"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep DBs and server logs")
    parser.add_argument(
        "--throwaway-services",
        action="store_true",
        help="skyhigh-scale: start a private Redis and Postgres (needs the Debian packages)",
    )
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    run_id = f"bench{int(time.time())}"
    return [
        bench_target(name, args, f"{run_id}-r{index}") | {"round": index}
        for index in range(1, args.rounds + 1)
        for name in args.targets
    ]


@contextmanager
def throwaway_services(args: argparse.Namespace) -> Iterator[None]:
    """A private redis-server and durable Postgres for skyhigh-scale (tests/support/services.py)."""
    from tests.support.services import PostgresServer, RedisServer

    redis, postgres = RedisServer(), PostgresServer(durable=True)
    try:
        redis.start()
        postgres.start()
        args.queue_url, args.database_url = redis.url, postgres.new_database()
        yield
    finally:
        redis.stop()
        postgres.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.throwaway_services and args.from_json is None:
        with throwaway_services(args):
            return measure(args)
    return measure(args)


def measure(args: argparse.Namespace) -> int:
    if args.from_json is None and shutil.which(args.wrk) is None:
        print(f"{args.wrk} not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    scale_urls = args.queue_url is not None and args.database_url is not None
    if args.from_json is None and SCALE_TARGET in args.targets and not scale_urls:
        print(f"--targets {SCALE_TARGET} needs --queue-url and --database-url", file=sys.stderr)
        return 2
    if args.from_json is not None:
        report: dict[str, Any] = json.loads(args.from_json.read_text())
    else:
        report = {"environment": environment(args), "results": run_all(args)}
    report["summary"] = load_summary(report["results"])
    report["ratios"] = ratios(report["results"], args)
    write_report(args.out, report, render_markdown(report))
    return 0


def write_report(out: Path, report: dict[str, Any], markdown: str) -> None:
    """<out>.json (raw) and <out>.md (tables), and the tables on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
