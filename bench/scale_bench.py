"""Scale-out benchmark: worker scaling, intake in scale mode, latency, API memory.

One command measures, on this machine, against a throwaway Redis and Postgres (the classes of
tests/support/services.py, with Postgres durable: fsync on, as in production):

1. speech events per minute with 1 and with 2 worker processes (`python -m skyhigh.worker -Q
   events`, each limited to one inference thread: WHISPER_CPU_THREADS=1, OMP_NUM_THREADS=1,
   MKL_NUM_THREADS=1), jfk.wav clips sent as base64 speech events with the knowledge lookup on;
3. accept → completed p50/p95 of query events with those workers (the embedded mode's figure
   comes from intake_load.py's `skyhigh` target, the same code and settings);
4. the API process's RSS in scale mode: once ready, after the speech and query events, and after
   a wrk burst (VmRSS and its peak VmHWM from /proc);
2. and 5. `POST /events/` under wrk by driving bench/intake_load.py once per round with the
   targets `skyhigh-scale` (API only, no worker), `bare` (the seed's handler) and `skyhigh` (the
   embedded default, workers as threads in the API process), each round on a fresh database;
   then `skyhigh-scale` again with one worker process on the same two cores working the events
   off while the load runs (what moving the embedded workers into a child process would give).
   Redis's and Postgres's CPU time per accepted event is measured along, for a capacity model.

Usage (from the repository root; needs wrk, redis-server and postgresql, which
`apt-get install -y wrk redis-server postgresql` provides):

    uv run python -m bench.scale_bench                      # everything, 3 intake rounds
    uv run python -m bench.scale_bench --quiet-load 1.5     # first wait (<= 30 min) for calm
    uv run python -m bench.scale_bench --speech-events 4 --query-events 10 --rounds 1 \\
        --duration 5 --out /tmp/scale_dry                      # a dry run in a few minutes

Writes <out>.json (raw) and <out>.md (tables); default bench/results/scale_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

# bench/intake_load.py: targets, wrk, the completion phase
from bench import intake_load
from tests.support.ports import free_port
from tests.support.server import serve_command, wait_ready
from tests.support.services import PostgresServer, RedisServer

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

JFK = REPO / "tests" / "data" / "jfk.wav"
JFK_WORDS = "ask not what your country can do for you"
# LANCE_CPU_THREADS: LanceDB's compute pool (the knowledge lookup) defaults to one thread per core.
ONE_THREAD = {
    "WHISPER_CPU_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "LANCE_CPU_THREADS": "1",
}
WORKER_KEYS = "skyhigh:workers:*"  # the heartbeat keys (skyhigh.processing.runtime)
# Scale-mode API + one co-located worker process, per store: the nearest thing to the embedded
# workers moved into a child process (with SQLite, the embedded default's store).
COLOCATED = {"postgres": "skyhigh-scale+worker", "sqlite": "skyhigh-scale-sqlite+worker"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# --- services and processes ----------------------------------------------------------------


class DurablePostgres(PostgresServer):
    """tests/support/services.py's throwaway Postgres, but durable (fsync on, the default): the 202
    promise should cost here what it costs in production, as SQLite's synchronous=FULL does."""

    def __init__(self) -> None:
        super().__init__(durable=True)

    def pids(self, table: dict[int, tuple[int, str]] | None = None) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL writer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [postmaster, *children(postmaster, table)]


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every process on the host."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            comm = text[text.index("(") + 1 : text.rindex(")")]
            table[int(stat.parent.name)] = (int(text.rsplit(")", 1)[1].split()[1]), comm)
    return table


def children(parent: int, table: dict[int, tuple[int, str]] | None = None) -> list[int]:
    table = process_table() if table is None else table
    return [pid for pid, (ppid, _) in table.items() if ppid == parent]


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process and its reaped children; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu(pid) or 0.0 for pid in pids)


class CpuSampler:
    """CPU seconds of named groups of processes, sampled five times a second in a thread, so
    a stretch of time (one target's wrk load) can be charged to each group afterwards. The
    groups are looked up once a second: `find(process_table())` -> {group: [pid, ...]}.

    Usage::

        with CpuSampler(lambda table: {"redis": [redis_pid]}) as sampler:
            ...
        sampler.used(start, end)  # {"redis": 1.23}
    """

    def __init__(self, find: Callable[[dict[int, tuple[int, str]]], dict[str, list[int]]]) -> None:
        self._find = find
        self._series: dict[tuple[str, int], list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        groups: dict[str, list[int]] = {}
        looked_up = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - looked_up >= 1.0:
                groups, looked_up = self._find(process_table()), now
            for name, pids in groups.items():
                for pid in pids:
                    value = process_cpu(pid)
                    if value is not None:
                        self._series.setdefault((name, pid), []).append((now, value))
            self._stop.wait(0.2)

    def used(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each group used between two monotonic times (to within a sample)."""
        used: dict[str, float] = {}
        for (name, _pid), series in self._series.items():
            before = [value for at, value in series if at <= start]
            until_end = [value for at, value in series if at <= end + 0.2]
            if until_end:  # a process that appeared within the window started from zero
                delta = until_end[-1] - (before[-1] if before else 0.0)
                used[name] = used.get(name, 0.0) + delta
        return {name: round(value, 2) for name, value in used.items()}


class Backends:
    """The broker and the store every phase uses; each phase gets a fresh database and an
    emptied Redis."""

    def __init__(self) -> None:
        self.redis = RedisServer()
        self.postgres = DurablePostgres()

    def __enter__(self) -> Backends:
        self.redis.start()
        self.postgres.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.redis.stop()
        self.postgres.stop()

    def fresh(self) -> str:
        """Empty the broker; a new, empty database's URL."""
        redis.Redis.from_url(self.redis.url).flushall()
        return str(self.postgres.new_database())

    @property
    def redis_pid(self) -> int:
        assert self.redis.proc is not None
        return self.redis.proc.pid

    def pids(self, table: dict[int, tuple[int, str]] | None = None) -> dict[str, list[int]]:
        return {"redis": [self.redis_pid], "postgres": self.postgres.pids(table)}


class Process:
    """A child process in its own session (stopped as a group), logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.command, self.env, self.log = name, command, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None:
            intake_load.stop_process(self.proc, grace_s=60)


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return {
        "rss_mib": round(int(values["VmRSS"]) / 1024, 1),
        "peak_mib": round(int(values["VmHWM"]) / 1024, 1),
    }


def loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# --- a scale-out fleet on this host --------------------------------------------------------


@dataclass
class Fleet:
    api: Process
    workers: list[Process]
    base: str

    def stop(self) -> None:
        for worker in self.workers:  # workers first: the API's sweeper has nothing to re-send
            worker.stop()
        self.api.stop()

    def cpu(self, backends: Backends) -> dict[str, float]:
        """CPU seconds so far of the API, the workers (together), Redis and Postgres."""
        groups = {"api": [self.api.pid], "workers": [w.pid for w in self.workers]}
        return {name: cpu_seconds(pids) for name, pids in (groups | backends.pids()).items()}


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in after}


def fleet_env(
    workdir: Path, queue_url: str, database_url: str, args: argparse.Namespace
) -> dict[str, str]:
    lancedb = workdir / "lancedb_data"  # a private copy: the committed one stays untouched
    if not lancedb.exists():
        shutil.copytree(REPO / "lancedb_data", lancedb)
    return {
        "API_TOKENS": intake_load.TOKEN,
        "QUEUE_URL": queue_url,
        "DATABASE_URL": database_url,
        "SPOOL_DIR": str(workdir / "spool"),  # the API spools audio, a worker reads it
        "LANCEDB_URI": str(lancedb),
        "WHISPER_MODEL": args.model,
        "WHISPER_ENGINE": args.engine,
        "MAX_PENDING_EVENTS": "10000000",
        "LOG_LEVEL": "WARNING",
    }


def start_worker(env: dict[str, str], workdir: Path, index: int) -> Process:
    command = [sys.executable, "-m", "skyhigh.worker", "-Q", "events"]
    worker = Process(
        f"worker{index}", command, {**env, **ONE_THREAD}, workdir / f"worker{index}.log"
    )
    worker.start()
    return worker


def wait_workers(queue_url: str, workers: list[Process], timeout_s: float) -> float:
    """Until every worker has sent its first heartbeat (it does once its models are loaded)."""
    client = redis.Redis.from_url(queue_url)
    started = time.monotonic()
    while time.monotonic() < started + timeout_s:
        for worker in workers:
            worker.check_alive()
        if len(list(client.scan_iter(match=WORKER_KEYS))) >= len(workers):
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{len(workers)} workers not ready after {timeout_s:.0f} s")


def api_ready(base: str, api: Process, timeout_s: float) -> float:
    assert api.proc is not None
    return wait_ready(base, api.proc, log_path=api.log, timeout_s=timeout_s)


@contextmanager
def running_fleet(
    n_workers: int, workdir: Path, queue_url: str, database_url: str, args: argparse.Namespace
) -> Iterator[tuple[Fleet, dict[str, Any]]]:
    env = fleet_env(workdir, queue_url, database_url, args)
    port = free_port()
    command = serve_command(port, extra=intake_load.UVICORN_FLAGS)
    api = Process("api", command, env, workdir / "api.log")
    workers = [start_worker(env, workdir, index) for index in range(1, n_workers + 1)]
    fleet = Fleet(api, workers, f"http://{intake_load.HOST}:{port}")
    try:
        api.start()
        startup = {
            "api_ready_s": round(api_ready(fleet.base, api, args.startup_timeout), 1),
            "workers_ready_s": round(wait_workers(queue_url, workers, args.startup_timeout), 1),
        }
        yield fleet, startup
    except BaseException:
        for process in (api, *workers):
            if process.log.exists():
                tail = process.log.read_text(errors="replace")[-2000:]
                print(f"[{process.name}] log tail:\n{tail}", file=sys.stderr)
        raise
    finally:
        fleet.stop()


# --- (1) speech throughput -----------------------------------------------------------------


def speech_body(event_id: str, audio_b64: str) -> dict[str, Any]:
    # lookup stays on (the default): a speech event is transcribe + embed + search, as users send.
    return {"event_id": event_id, "event_type": "speech", "event_data": {"audio_base64": audio_b64}}


async def submit_all(base: str, bodies: list[dict[str, Any]], concurrency: int) -> None:
    pending = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {intake_load.TOKEN}"}

    async def sender(client: httpx.AsyncClient) -> None:
        while pending:
            body = pending.pop()
            response = await client.post("/events/", json=body)
            if response.status_code != 202:
                raise RuntimeError(f"{body['event_id']}: {response.status_code} {response.text}")

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))


def wait_finished(base: str, event_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Each event's record once finished. Polls one event at a time, oldest first, twice a
    second, so the client adds almost no load; the figures come from the records' timestamps."""
    headers = {"Authorization": f"Bearer {intake_load.TOKEN}"}
    deadline = time.monotonic() + timeout_s
    records = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for event_id in event_ids:
            while True:
                record: dict[str, Any] = client.get(f"/events/{event_id}").raise_for_status().json()
                if record["status"] in intake_load.TERMINAL:
                    records.append(record)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{event_id} still {record['status']} after {timeout_s} s")
                time.sleep(0.5)
    return records


def moment(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def said_jfk(record: dict[str, Any]) -> bool:
    if record["status"] != "completed":
        return False
    words = re.sub(r"[^a-z ]+", " ", record["result"]["transcript"]["text"].lower())
    return JFK_WORDS in " ".join(words.split())


def speech_throughput(records: list[dict[str, Any]], n_workers: int) -> dict[str, Any]:
    """Events per minute two ways. Steady: while every worker is busy, a worker starts an
    event each time it finishes one, so starts come at the fleet's rate: count the starts
    after the last worker began its first event up to the last start (the queue is empty
    after it), free of start-up and tail effects. Makespan: all events over first start to
    last finish."""
    starts = sorted(moment(r["started_at"]) for r in records)
    last_finish = max(moment(r["finished_at"]) for r in records)
    busy_s = starts[-1] - starts[n_workers - 1]
    steady = 60 * (len(starts) - n_workers) / busy_s if busy_s > 0 else None
    processing = [moment(r["finished_at"]) - moment(r["started_at"]) for r in records]
    accept = [moment(r["finished_at"]) - moment(r["created_at"]) for r in records]
    pct = intake_load.percentile
    return {
        "events": len(records),
        "completed": sum(r["status"] == "completed" for r in records),
        "transcripts_ok": sum(said_jfk(r) for r in records),
        "attempts_over_1": sum(r.get("attempts", 1) > 1 for r in records),
        "steady_events_per_min": None if steady is None else round(steady, 1),
        "makespan_events_per_min": round(60 * len(records) / (last_finish - starts[0]), 1),
        "processing_p50_s": round(pct(processing, 50), 3),
        "processing_p95_s": round(pct(processing, 95), 3),
        "accept_to_completed_p50_s": round(pct(accept, 50), 2),
        "accept_to_completed_p95_s": round(pct(accept, 95), 2),
    }


def tasks_per_worker(workers: list[Process]) -> list[int]:
    """Celery's 'succeeded' lines per worker log (hints that were no-ops included)."""
    return [w.log.read_text(errors="replace").count("succeeded in") for w in workers]


def speech_phase(
    fleet: Fleet, backends: Backends, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    audio = base64.b64encode(JFK.read_bytes()).decode()
    n_workers = len(fleet.workers)
    warm = [speech_body(f"{tag}-warm{i}", audio) for i in range(args.warmup_events * n_workers)]
    asyncio.run(submit_all(fleet.base, warm, 4))
    wait_finished(fleet.base, [b["event_id"] for b in warm], args.event_timeout)
    bodies = [speech_body(f"{tag}-s{i}", audio) for i in range(args.speech_events)]
    cpu_before, load_before, started = fleet.cpu(backends), loadavg(), time.monotonic()
    asyncio.run(submit_all(fleet.base, bodies, 4))
    records = wait_finished(fleet.base, [b["event_id"] for b in bodies], args.event_timeout)
    cpu_after, wall_s = fleet.cpu(backends), time.monotonic() - started
    result = speech_throughput(records, n_workers)
    result |= {
        "workers": n_workers,
        "warmup_events": len(warm),
        "tasks_per_worker_log": tasks_per_worker(fleet.workers),
        "cpu_s": spent(cpu_before, cpu_after),
        "wall_s": round(wall_s, 1),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    return result


# --- (3) query latency and (4) API memory --------------------------------------------------


def query_phase(
    fleet: Fleet, backends: Backends, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    options = argparse.Namespace(
        completion_events=args.query_events,
        completion_concurrency=args.completion_concurrency,
        poll_interval=args.poll_interval,
    )
    cpu_before, load_before, started = fleet.cpu(backends), loadavg(), time.monotonic()
    result: dict[str, Any] = asyncio.run(intake_load.completion_phase(fleet.base, options, tag))
    cpu_after, wall_s = fleet.cpu(backends), time.monotonic() - started
    result |= {
        "cpu_s": spent(cpu_before, cpu_after),
        "wall_s": round(wall_s, 1),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    return result


def idle_cpu(fleet: Fleet, backends: Backends, seconds: float) -> dict[str, float]:
    """Cores each part uses with nothing to do: the API's admission count (every 0.25 s) and
    sweeper, the workers' lease and heartbeat threads, Postgres and Redis answering them."""
    before = fleet.cpu(backends)
    time.sleep(seconds)
    return {
        name: round(used / seconds, 3) for name, used in spent(before, fleet.cpu(backends)).items()
    }


def wrk_options(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(
        wrk=args.wrk, threads=args.threads, connections=args.connections, wrk_timeout=10.0
    )


def fleet_phase(
    n_workers: int, backends: Backends, args: argparse.Namespace, run_id: str
) -> dict[str, Any]:
    tag = f"{run_id}-w{n_workers}"
    database_url = backends.fresh()
    workdir = Path(tempfile.mkdtemp(prefix=f"scale-w{n_workers}-"))
    try:
        with running_fleet(n_workers, workdir, backends.redis.url, database_url, args) as (
            fleet,
            startup,
        ):
            print(f"[{n_workers} workers] ready: {startup}", flush=True)
            memory = {"ready": memory_mib(fleet.api.pid)}
            idle = idle_cpu(fleet, backends, args.idle_sample)
            print(f"[{n_workers} workers] idle: {idle}", flush=True)
            speech = speech_phase(fleet, backends, args, tag)
            print(f"[{n_workers} workers] speech: {speech}", flush=True)
            query = query_phase(fleet, backends, args, f"{tag}-q")
            print(f"[{n_workers} workers] query: {query}", flush=True)
            memory["after_speech_and_query"] = memory_mib(fleet.api.pid)
            if args.rss_load > 0:
                burst = intake_load.run_wrk(
                    fleet.base, wrk_options(args), args.rss_load, f"{tag}-rss"
                )
                memory["after_wrk_burst"] = memory_mib(fleet.api.pid)
                memory["wrk_burst"] = {
                    "duration_s": args.rss_load,
                    "requests_per_s": burst.requests_per_s,
                }
            print(f"[{n_workers} workers] API memory: {memory}", flush=True)
    finally:
        if args.keep_workdir:
            print(f"[{n_workers} workers] kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "workers": n_workers,
        "startup": startup,
        "idle_cores": idle,
        "speech": speech,
        "query": query,
        "api_memory_mib": memory,
    }


# --- the API's hint sender -----------------------------------------------------------------


def sender_probe(backends: Backends, messages: int) -> dict[str, Any]:
    """What one Celery message costs its sender (`send_task`, sent back to back to a queue no
    one reads): the CeleryDispatcher sends one per queue per send round, and the worker that
    takes it one per KEYS_PER_WORKER keys it forwards (skyhigh.processing.celery_dispatch)."""
    from skyhigh.config import ProcessingSettings
    from skyhigh.processing.celery_app import PROCESS_EVENT, make_celery

    backends.fresh()
    app = make_celery(ProcessingSettings(queue_url=backends.redis.url))
    app.send_task(PROCESS_EVENT, args=["warm-up"], queue="bench-probe")  # connect, lazy imports
    redis_before = cpu_seconds([backends.redis_pid])
    wall, cpu = time.perf_counter(), time.thread_time()
    for index in range(messages):
        app.send_task(PROCESS_EVENT, args=[f"probe-{index}"], queue="bench-probe")
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    redis_cpu = cpu_seconds([backends.redis_pid]) - redis_before
    queued = redis.Redis.from_url(backends.redis.url).llen("bench-probe") - 1  # the warm-up
    backends.fresh()
    return {
        "messages": messages,
        "queued": int(queued),
        "per_s": round(messages / wall),
        "wall_ms_per_hint": round(1000 * wall / messages, 3),
        "sender_cpu_ms_per_hint": round(1000 * cpu / messages, 3),
        "redis_cpu_ms_per_hint": round(1000 * redis_cpu / messages, 3),
        "loadavg": loadavg(),
    }


# --- (2) and (5) intake under load ---------------------------------------------------------


def intake_command(
    args: argparse.Namespace, targets: list[str], queue_url: str, database_url: str, out: Path
) -> list[str]:
    return [
        sys.executable, "-m", "bench.intake_load", "--targets", *targets, "--rounds", "1",
        "--queue-url", queue_url, "--database-url", database_url,
        "--duration", f"{args.duration:g}", "--connections", str(args.connections),
        "--threads", str(args.threads), "--warmup", f"{args.warmup:g}", "--wrk", args.wrk,
        "--completion-events", str(args.query_events),
        "--completion-concurrency", str(args.completion_concurrency),
        "--poll-interval", f"{args.poll_interval:g}", "--out", str(out),
    ]  # fmt: skip


def run_intake_load(
    command: list[str], out: Path, args: argparse.Namespace, backends: Backends
) -> dict[str, Any]:
    """Run intake_load.py, echoing its output; charge each target's wrk load the CPU its server,
    wrk, Redis, Postgres and any co-located worker used meanwhile (`cpu_during_load_s`)."""
    print("$ " + " ".join(command[1:]), flush=True)
    load_ended: dict[str, float] = {}
    proc = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def find(table: dict[int, tuple[int, str]]) -> dict[str, list[int]]:
        # intake_load's children: the server of the target under test, and wrk.
        mine = [(pid, comm) for pid, (ppid, comm) in table.items() if ppid == proc.pid]
        groups = {
            "server": [pid for pid, comm in mine if comm != "wrk"],
            "wrk": [pid for pid, comm in mine if comm == "wrk"],
        }
        return groups | backends.pids(table) | {"worker": args.colocated_pids}

    with CpuSampler(find) as sampler:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if match := re.match(r"^\[(\S+)\] load: ", line):
                load_ended[match.group(1)] = time.monotonic()
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, command)
    report: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    for result in report["results"]:
        end = load_ended[result["target"]]
        used = sampler.used(end - result["load"]["duration_s"], end)
        requests = max(1, result["load"]["requests"])
        result["cpu_during_load_s"] = used
        result["cpu_ms_per_request"] = {k: round(1000 * v / requests, 3) for k, v in used.items()}
    return report


def intake_round(
    index: int, backends: Backends, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """One round: scale (no worker), bare, embedded; then scale with a co-located worker."""
    database_url = backends.fresh()
    out = tmp / f"round{index}"
    command = intake_command(args, args.intake_targets, backends.redis.url, database_url, out)
    report = run_intake_load(command, out, args, backends)
    results = [r | {"round": index} for r in report["results"]]
    results += [colocated_round(index, store, backends, args, tmp) for store in args.colocated]
    return {"environment": report["environment"], "results": results}


def colocated_round(
    index: int, store: str, backends: Backends, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """The scale-mode API under the same load while one worker process (one inference thread)
    on the same two cores works the accepted events off: what moving the embedded workers into
    a child process would give, measured without building it. With `sqlite`, API and worker
    share a SQLite file (synchronous=FULL), as the embedded default does; Redis carries hints."""
    workdir = tmp / f"round{index}-{store}-worker"
    workdir.mkdir()
    database_url = backends.fresh()
    if store == "sqlite":
        database_url = f"sqlite:///{workdir}/events.db"
    env = fleet_env(workdir, backends.redis.url, database_url, args)
    worker = start_worker(env, workdir, 1)
    try:
        wait_workers(backends.redis.url, [worker], args.startup_timeout)
        out = tmp / f"round{index}-{store}-colocated"
        command = intake_command(
            args, [intake_load.SCALE_TARGET], backends.redis.url, database_url, out
        )
        colocated = argparse.Namespace(**vars(args) | {"colocated_pids": [worker.pid]})
        result: dict[str, Any] = run_intake_load(command, out, colocated, backends)["results"][0]
        if args.drain > 0:
            result["worker_alone"] = worker_alone(database_url, worker, backends, args.drain)
    finally:
        worker.stop()
    result |= {
        "target": COLOCATED[store],
        "description": f"SkyHigh scale-out API + 1 worker process (1 thread), {store} store",
        "round": index,
        "worker_during_load": processed_while_accepting(database_url),
    }
    return result


def completed_events(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM events WHERE status = 'completed'")
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def worker_alone(
    database_url: str, worker: Process, backends: Backends, seconds: float
) -> dict[str, Any]:
    """After the load, the API stopped and thousands of query events waiting: the worker alone,
    with no intake and no polling. Completions per second, and the CPU each completion costs
    the worker, Postgres and Redis: what one worker process sustains, and what it asks of the
    backends."""

    def cpu() -> dict[str, float]:
        groups = {"worker": [worker.pid]} | backends.pids()
        return {name: cpu_seconds(pids) for name, pids in groups.items()}

    done, used, started = completed_events(database_url), cpu(), time.monotonic()
    time.sleep(seconds)
    done = completed_events(database_url) - done
    used = spent(used, cpu())
    wall = time.monotonic() - started
    return {
        "seconds": round(wall, 1),
        "completed": done,
        "per_s": round(done / wall, 1),
        "cpu_ms_per_event": {k: round(1000 * v / done, 3) for k, v in used.items()} if done else {},
        "loadavg": loadavg(),
    }


def processed_while_accepting(database_url: str) -> dict[str, Any]:
    """Events the worker finished between the first and the last accepted event."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            first, last, total = connection.execute(
                text("SELECT min(created_at), max(created_at), count(*) FROM events")
            ).one()
            done = connection.execute(
                text(
                    "SELECT count(*) FROM events WHERE status = 'completed' AND finished_at <= :t"
                ),
                {"t": last},
            ).scalar_one()
    finally:
        engine.dispose()
    span = (as_datetime(last) - as_datetime(first)).total_seconds() if total else 0.0
    return {
        "accepted": int(total),
        "completed_meanwhile": int(done),
        "span_s": round(span, 1),
        "completed_per_s": round(int(done) / span, 1) if span > 0 else None,
    }


def as_datetime(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite: text


def merge_intake(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    results = [r for one in rounds for r in one["results"]]
    targets = argparse.Namespace(rps_target=0.8, p99_target=1.25)
    report: dict[str, Any] = {"environment": rounds[0]["environment"], "results": results}
    report["summary"] = intake_load.load_summary(results)
    report["ratios"] = intake_load.ratios(results, targets)
    report["markdown"] = intake_load.render_markdown(report)
    return report


# --- report --------------------------------------------------------------------------------


def wait_quiet(threshold: float, max_wait_s: float) -> dict[str, Any]:
    """Wait (polling each minute) until the 1-minute load average is below threshold."""
    started = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - started < max_wait_s:
        print(f"load {loadavg()}: waiting for < {threshold}", flush=True)
        time.sleep(60)
    return {
        "threshold": threshold,
        "waited_s": round(time.monotonic() - started),
        "loadavg": loadavg(),
    }


def default_setting(name: str) -> Any:
    from skyhigh.config import Settings

    return Settings.model_fields[name].default


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "code": intake_load.git_describe(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["uv run python -m bench.scale_bench", *sys.argv[1:]]),
        "model": args.model,
        "engine": args.engine,
        "embedding_backend": default_setting("embedding_backend"),
        "redis": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "postgres": "fsync on (defaults), max_connections=200, one cluster for the whole run",
    }


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def render(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Machine: {env['cpus']} CPUs, {env['platform']}, Python {env['python']}; "
        f"code {env['code']}; started {env['started']}.",
        f"Command: `{env['command']}`. Whisper {env['engine']} `{env['model']}`, embeddings "
        f"{env.get('embedding_backend', '?')}; {env['redis']}; Postgres {env['postgres']}.",
    ]
    if "quiet" in report:
        q = report["quiet"]
        lines.append(f"Waited {q['waited_s']} s for load < {q['threshold']}: {q['loadavg']}.")
    if "sender" in report:
        h = report["sender"]
        lines += [
            "",
            f"Hint sender (Celery `send_task`, back to back, one thread): {h['per_s']} hints/s; "
            f"per hint {h['wall_ms_per_hint']} ms wall, {h['sender_cpu_ms_per_hint']} ms CPU in "
            f"the sender, {h['redis_cpu_ms_per_hint']} ms CPU in Redis ({h['queued']} of "
            f"{h['messages']} queued; load {h['loadavg'][0]}).",
        ]
    lines += _fleet_lines(report.get("fleet", []))
    if "intake" in report:
        lines += ["", "### Intake under wrk (intake_load.py, one fresh database per round)", ""]
        lines.append(report["intake"]["markdown"])
        lines += _intake_extra_lines(report["intake"]["results"])
    return "\n".join(lines) + "\n"


def _cpu_cells(phase: dict[str, Any]) -> str:
    """Workers' CPU seconds per event; the cores API / Postgres / Redis used meanwhile (their
    CPU is mostly polling and background work here, not per event)."""
    cpu, wall = phase["cpu_s"], phase["wall_s"]
    cores = " / ".join(f"{cpu[name] / wall:.3f}" for name in ("api", "postgres", "redis"))
    return f"{cpu['workers'] / phase['events']:.3f} | {cores}"


def _fleet_lines(phases: list[dict[str, Any]]) -> list[str]:
    if not phases:
        return []
    lines = [
        "",
        "### Speech events, scale mode (workers with one inference thread each)",
        "",
        row(
            "workers", "events", "steady events/min", "makespan events/min",
            "processing p50 / p95 s", "accept→completed p50 / p95 s", "transcripts ok",
            "tasks per worker", "worker CPU s per event", "API / Postgres / Redis cores",
            "load before→after",
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]  # fmt: skip
    for p in phases:
        s = p["speech"]
        lines.append(
            row(
                p["workers"], s["events"], s["steady_events_per_min"],
                s["makespan_events_per_min"],
                f"{s['processing_p50_s']} / {s['processing_p95_s']}",
                f"{s['accept_to_completed_p50_s']} / {s['accept_to_completed_p95_s']}",
                f"{s['transcripts_ok']}/{s['events']}", s["tasks_per_worker_log"],
                _cpu_cells(s),
                f"{s['loadavg_before'][0]}→{s['loadavg_after'][0]}",
            )
        )  # fmt: skip
    by_workers = {p["workers"]: p["speech"] for p in phases}
    if 1 in by_workers and 2 in by_workers:
        for key in ("steady_events_per_min", "makespan_events_per_min"):
            one, two = by_workers[1][key], by_workers[2][key]
            if one and two:
                met = "met" if two / one >= 1.8 else "NOT met"
                lines.append(f"\n2 vs 1 workers, {key}: **{two / one:.2f}×** (≥ 1.8: {met})")
    lines += [
        "",
        "### Query events, scale mode: accept→completed (intake_load's completion phase)",
        "",
        row(
            "workers", "events", "accept→completed p50 / p95 ms", "queue wait p50 / p95 ms",
            "processing p50 / p95 ms", "client-observed p50 / p95 ms", "worker CPU s per event",
            "API / Postgres / Redis cores", "load before",
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for p in phases:
        q = p["query"]
        lines.append(
            row(
                p["workers"], q["events"], _pair(q, "accept_to_completed"),
                _pair(q, "queue_wait"), _pair(q, "processing"), _pair(q, "client_observed"),
                _cpu_cells(q), q["loadavg_before"][0],
            )
        )  # fmt: skip
    lines += [
        "",
        "### API process memory, scale mode (MiB; VmRSS, peak VmHWM)",
        "",
        row("workers", "ready", "after speech + query", "after wrk burst", "peak", "≤ 400 MB?"),
        "|---:|---:|---:|---:|---:|---|",
    ]
    for p in phases:
        m = p["api_memory_mib"]
        last = m.get("after_wrk_burst", m["after_speech_and_query"])
        met = "met" if last["peak_mib"] * 1024 * 1024 <= 400e6 else "NOT met"
        burst = m.get("after_wrk_burst", {}).get("rss_mib", "-")
        lines.append(
            row(
                p["workers"], m["ready"]["rss_mib"], m["after_speech_and_query"]["rss_mib"],
                burst, last["peak_mib"], met,
            )
        )  # fmt: skip
    lines += [
        "",
        "Idle cost, nothing to do (cores used over the idle sample): the API's admission count "
        "and sweeper, the workers' lease and heartbeat threads, and Postgres and Redis serving "
        "them.",
        "",
        row("workers", "API", "workers (all)", "Postgres", "Redis"),
        "|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        idle = p["idle_cores"]
        lines.append(
            row(p["workers"], idle["api"], idle["workers"], idle["postgres"], idle["redis"])
        )
    return lines


def _pair(stats: dict[str, Any], key: str) -> str:
    return f"{stats[key + '_p50_ms']:.0f} / {stats[key + '_p95_ms']:.0f}"


def _intake_extra_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "CPU per request during each target's wrk load (ms of CPU / requests sent; sampled from "
        "/proc five times a second), and what the co-located worker finished meanwhile:",
        "",
        row(
            "target", "round", "req/s", "p99 ms", "server", "wrk", "Postgres", "Redis",
            "worker", "worker completed/s",
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in results:
        ms = r.get("cpu_ms_per_request", {})
        worker = r.get("worker_during_load", {}).get("completed_per_s", "-")
        lines.append(
            row(
                r["target"], r["round"], f"{r['load']['requests_per_s']:.0f}",
                f"{r['load']['latency_ms']['p99']:.0f}",
                *(ms.get(name, "-") for name in ("server", "wrk", "postgres", "redis", "worker")),
                worker,
            )
        )  # fmt: skip
    alone = [r for r in results if "worker_alone" in r]
    if alone:
        lines += [
            "",
            "The co-located worker alone afterwards (API stopped, thousands of query events "
            "queued; CPU per completed event):",
            "",
            row("store", "round", "completed/s", "worker ms", "Postgres ms", "Redis ms", "load"),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in alone:
            a = r["worker_alone"]
            ms = a["cpu_ms_per_event"]
            lines.append(
                row(
                    r["target"], r["round"], a["per_s"], ms.get("worker", "-"),
                    ms.get("postgres", "-"), ms.get("redis", "-"), a["loadavg"][0],
                )
            )  # fmt: skip
    return lines


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="fleet sizes (1 2)")
    parser.add_argument("--speech-events", type=int, default=30, help="measured per fleet (30)")
    parser.add_argument("--warmup-events", type=int, default=2, help="unmeasured, per worker (2)")
    parser.add_argument("--model", default="tiny.en", help="WHISPER_MODEL (tiny.en, bundled)")
    parser.add_argument("--engine", default="openai-whisper", help="WHISPER_ENGINE")
    parser.add_argument("--query-events", type=int, default=100, help="accept→completed (100)")
    parser.add_argument("--completion-concurrency", type=int, default=4, help="their clients (4)")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="their poll, s (0.01)")
    parser.add_argument("--sender-probe", type=int, default=3000, help="hints sent (0: skip)")
    parser.add_argument("--idle-sample", type=float, default=5.0, help="idle CPU sample, s")
    parser.add_argument("--rss-load", type=float, default=10.0, help="wrk burst before RSS, s")
    parser.add_argument("--rounds", type=int, default=3, help="intake rounds (3; 0: none)")
    parser.add_argument(
        "--intake-targets",
        nargs="+",
        default=[intake_load.SCALE_TARGET, "bare", "skyhigh"],
        help="intake_load targets per round (default: %(default)s)",
    )
    parser.add_argument(
        "--colocated",
        nargs="*",
        choices=sorted(COLOCATED),
        default=["postgres", "sqlite"],
        help="per round, the scale-mode API with one worker on the same cores, on these stores",
    )
    parser.add_argument(
        "--drain", type=float, default=10.0, help="then watch the co-located worker alone, s"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="wrk seconds (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="wrk warm-up seconds (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--wrk", default="wrk", help="path of the wrk binary")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="per process, s")
    parser.add_argument("--event-timeout", type=float, default=900.0, help="per batch, s")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=0.0,
        help="first wait until the 1-min load average is below this (0: don't wait)",
    )
    parser.add_argument("--quiet-wait", type=float, default=1800.0, help="... at most, s")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and data")
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results" / "scale_bench", help="<out>.json and .md"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.colocated_pids = []
    for tool in (args.wrk, "redis-server"):
        if shutil.which(tool) is None:
            print(
                f"{tool} not found: apt-get install -y wrk redis-server postgresql", file=sys.stderr
            )
            return 2
    report: dict[str, Any] = {"environment": environment(args)}
    if args.quiet_load > 0:
        report["quiet"] = wait_quiet(args.quiet_load, args.quiet_wait)
    run_id = f"scale{int(time.time())}"
    tmp = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        with Backends() as backends:
            if args.sender_probe > 0:
                report["sender"] = sender_probe(backends, args.sender_probe)
                print(f"[sender] {report['sender']}", flush=True)
            report["fleet"] = [fleet_phase(n, backends, args, run_id) for n in args.workers]
            rounds = [intake_round(i, backends, args, tmp) for i in range(1, args.rounds + 1)]
            if rounds:
                report["intake"] = merge_intake(rounds, args)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    report["environment"]["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    report["environment"]["loadavg_at_end"] = loadavg()
    intake_load.write_report(args.out, report, render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
