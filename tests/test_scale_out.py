"""Scale-out for real: an API process in scale mode, Celery worker processes, a real Redis and a
real Postgres (tests/services.py), all on free local ports.

The fleet: one API (`uvicorn main:app` with QUEUE_URL; it holds only the small realtime model,
REALTIME_ENABLED), one worker on the `knowledge` queue (the single LanceDB writer) and two on
`events`. Leases and the sweeper run on short clocks
(EVENT_LEASE_S=4, REQUEUE_AFTER_S=3, SWEEP_INTERVAL_S=1) so crash tests finish quickly.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import psycopg
import pytest
import redis
from celery import Celery

from skyhigh.config import ProcessingSettings
from skyhigh.processing.celery_app import make_celery
from skyhigh.processing.celery_dispatch import KEYS_PER_WORKER, send_messages
from tests.speech_helpers import jfk_reference, wer
from tests.support.client import TERMINAL
from tests.support.diarized import encoded, two_speakers
from tests.support.realtime import Listener, client, pcm16, session_update, stream, turns_settled
from tests.support.server import ServerProcess
from tests.support.services import PostgresServer, RedisServer
from tests.support.settings import AUTH, DATA, ROOT, TOKENS, server_env

JWT_SECRET = "scale-out-test-secret-0123456789abcdef"  # HS256 wants >= 32 bytes

pytestmark = [pytest.mark.slow, pytest.mark.needs("redis-server")]


class WorkerProcess:
    """`python -m skyhigh.worker` with its own queues, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_from = 0  # where this start's part of the log begins

    def start(self) -> None:
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skyhigh.worker", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if b"worker ready" in self.log_path.read_bytes()[self.log_from :]:
                return  # this start's, not an earlier one's (a restarted worker)
            time.sleep(0.05)
        raise AssertionError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def log_records(self) -> list[dict[str, Any]]:
        """This start's JSON log records (other lines, e.g. Celery's banner, skipped)."""
        records = []
        for line in self.log_path.read_bytes()[self.log_from :].splitlines():
            if line.startswith(b"{"):
                records.append(json.loads(line))
        return records

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Fleet:
    api: ServerProcess
    writer: WorkerProcess
    workers: list[WorkerProcess]
    redis: RedisServer
    database_url: str
    env: dict[str, str]

    def post(self, event_id: str, event_type: str, data: dict[str, Any]) -> httpx.Response:
        body = {"event_id": event_id, "event_type": event_type, "event_data": data}
        return httpx.post(f"{self.api.url}/events/", json=body, headers=AUTH, timeout=30)

    def get(self, event_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.api.url}/events/{event_id}", headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return record

    def wait_all(self, event_ids: list[str], timeout_s: float = 240.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        records: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for event_id in event_ids:
                if event_id not in records:
                    try:
                        record = self.get(event_id)
                    except httpx.HTTPError:
                        continue  # the API may be restarting
                    if record["status"] in TERMINAL:
                        records[event_id] = record
            if len(records) == len(event_ids):
                return records
            time.sleep(0.05)
        missing = sorted(set(event_ids) - set(records))
        raise AssertionError(f"{len(missing)} events unfinished, e.g. {missing[:5]}")

    def whole(self) -> None:
        """Wait until every worker is ready (one restarted by a test may still be loading)."""
        for worker in (self.writer, *self.workers):
            worker.wait_ready()

    def lease_owner(self, event_id: str) -> str | None:
        """The worker holding the event's lease, or that ran it last once it finished."""
        row = self.sql("SELECT lease_owner FROM events WHERE event_id = %s", event_id)
        return None if not row else row[0][0]

    def worker_of(self, event_id: str) -> int:
        """Which of `workers` ran a finished event (its index)."""
        owner = self.lease_owner(event_id)
        assert owner is not None, event_id
        return next(i for i, w in enumerate(self.workers) if f":{w.pid}:" in owner)

    def redis_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue (a Redis list named after it)."""
        return int(redis.Redis.from_url(self.redis.url).llen(queue))

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        conninfo = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo) as connection:
            return connection.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    broker = RedisServer()
    broker.start()
    database_url = postgres.new_database()
    env = server_env(
        tmp,
        DATABASE_URL=database_url,
        QUEUE_URL=broker.url,
        EVENT_LEASE_S="4",
        REQUEUE_AFTER_S="3",
        SWEEP_INTERVAL_S="1",
        SHUTDOWN_GRACE_S="5",
        WORKER_CONCURRENCY="1",
        MAX_AUDIO_SECONDS="600",
        # Not about accuracy: greedy decoding, one thread per worker (two event workers
        # share the cores), so the long uploads the crash and fairness tests need finish sooner.
        WHISPER_BEAM_SIZE="1",
        WHISPER_CPU_THREADS="1",
    )
    # Only the API serves realtime sessions: it loads the small realtime model, workers none.
    api = ServerProcess({**env, "REALTIME_ENABLED": "true"}, tmp / "api.log")
    writer = WorkerProcess(env, tmp / "writer.log", "-Q", "knowledge")
    workers = [WorkerProcess(env, tmp / f"worker{i}.log", "-Q", "events") for i in (1, 2)]
    for worker in (writer, *workers):
        worker.start()
    api.start()
    for worker in (writer, *workers):
        worker.wait_ready()
    yield Fleet(api, writer, workers, broker, database_url, env)
    stops: list[Callable[[], None]] = [api.stop, writer.stop, *(w.stop for w in workers)]
    with ThreadPoolExecutor() as pool:  # each waits out its shutdown grace: all at once
        for stopped in [pool.submit(stop) for stop in stops]:
            stopped.result()
    broker.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def jfk() -> str:
    return base64.b64encode((DATA / "jfk.wav").read_bytes()).decode()


def long_clip() -> str:
    """53 s of real read speech (sonnet1.flac): long enough to kill a worker mid-way, and not
    repetitive (repeated speech compresses well, so Whisper's fallback would resample it)."""
    return base64.b64encode((DATA / "sonnet1.flac").read_bytes()).decode()


def test_the_api_process_loads_no_models_and_reports_its_workers(fleet: Fleet) -> None:
    status = httpx.get(f"{fleet.api.url}/status", timeout=30).json()
    assert status["dispatcher"]["kind"] == "celery"
    assert status["models"] == {"whisper": None, "embedding": None}
    deadline = time.monotonic() + 30
    while len(status["dispatcher"]["live_workers"]) < 3 and time.monotonic() < deadline:
        time.sleep(1)
        status = httpx.get(f"{fleet.api.url}/status", timeout=30).json()
    workers = status["dispatcher"]["live_workers"]
    assert len(workers) == 3 and all(w["model"] == "tiny.en" for w in workers)
    ready = httpx.get(f"{fleet.api.url}/ready", timeout=30).json()
    assert ready["checks"] == {"store": "ok", "broker": "ok"}


def test_each_worker_answers_remote_control_under_its_own_name(fleet: Fleet) -> None:
    # Three processes on one host: with Celery's default name (celery@<host>) for all of them,
    # a ping is answered under one name and the workers cannot be told apart.
    control = Celery(broker=fleet.redis.url, set_as_current=False).control
    names: set[str] = set()
    deadline = time.monotonic() + 30
    while len(names) < 3 and time.monotonic() < deadline:
        names |= {name for reply in control.ping(timeout=2.0) for name in reply}
    assert len(names) == 3, names
    pids = {str(w.pid) for w in (fleet.writer, *fleet.workers)}
    assert {name.split("@")[0].removeprefix("skyhigh-") for name in names} == pids


def test_forty_mixed_events_complete_exactly_once(fleet: Fleet) -> None:
    ids: dict[str, str] = {}
    for index in range(40):
        kind = ("query", "query", "query", "document", "speech")[index % 5]
        event_id = new_id(f"mix-{kind}")
        if kind == "query":
            data: dict[str, Any] = {"text": f"How many checked bags are free? #{index}", "k": 2}
        elif kind == "document":
            data = {"document_id": f"mix-doc-{index}", "title": "Mix", "text": f"Fact {index}."}
        else:
            data = {"audio_base64": jfk(), "language": "en", "lookup": False}
        assert fleet.post(event_id, kind, data).status_code == 202
        ids[event_id] = kind
    records = fleet.wait_all(list(ids))
    assert {r["status"] for r in records.values()} == {"completed"}
    assert all(r["attempts"] == 1 for r in records.values())  # each ran exactly once
    speech = [r for i, r in records.items() if ids[i] == "speech"]
    assert all("ask not" in r["result"]["transcript"]["text"].lower() for r in speech)


def test_a_message_of_many_keys_is_shared_out_by_the_worker_that_takes_it(fleet: Fleet) -> None:
    """An API sends one message per queue for a send round's keys; the worker that takes it
    keeps KEYS_PER_WORKER and forwards the rest to the queue it came on, in messages of that
    size. Keys of no stored event are no-ops, so this message only exercises the sharing."""
    keys = [f"no-such-event-{index}" for index in range(KEYS_PER_WORKER * 2 + 3)]
    seen = [len(worker.log_records()) for worker in fleet.workers]  # earlier tests' records
    send_messages(make_celery(ProcessingSettings(queue_url=fleet.redis.url)), [("events", keys)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        forwarded = [
            record
            for worker, before in zip(fleet.workers, seen, strict=True)
            for record in worker.log_records()[before:]
            if record.get("msg") == "forwarded hints"
        ]
        if forwarded:
            assert forwarded == [forwarded[0]]  # one worker took the message, once
            forwarded_keys = len(keys) - KEYS_PER_WORKER
            assert (forwarded[0]["queue"], forwarded[0]["count"]) == ("events", forwarded_keys)
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no worker forwarded the message's keys")
    # The forwarded messages were taken off the queue by the workers, not left behind.
    while fleet.redis_length("events") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fleet.redis_length("events") == 0


def test_a_document_written_by_the_writer_is_found_by_a_query_on_another_worker(
    fleet: Fleet,
) -> None:
    code = f"ZQ{uuid.uuid4().hex[:6].upper()}"
    doc = {"document_id": f"doc-{code}", "title": "Gate code", "text": f"The gate code is {code}."}
    written = new_id("doc")
    assert fleet.post(written, "document", doc).status_code == 202
    assert fleet.wait_all([written])[written]["status"] == "completed"
    query = new_id("find")
    data = {"text": code, "mode": "fulltext", "k": 3}
    assert fleet.post(query, "query", data).status_code == 202
    record = fleet.wait_all([query])[query]
    assert record["status"] == "completed", record
    assert record["result"]["matches"][0]["id"].startswith(f"doc-{code}")


def test_a_completed_document_is_seen_at_once_by_queries_on_both_workers_in_turn(
    fleet: Fleet,
) -> None:
    """Read-after-write: each query is sent the moment its document completes (no sleep), on
    whichever event worker is free; both run queries, in turn, so each query's worker last
    read the table before the write (the store records which worker ran each query)."""
    handled: list[int] = []
    for index in range(20):
        code = f"RW{uuid.uuid4().hex[:8].upper()}"
        doc = {"document_id": f"rw-{code}", "title": "Locker", "text": f"Locker code {code}."}
        written = new_id(f"rw-doc-{index}")
        assert fleet.post(written, "document", doc).status_code == 202
        assert fleet.wait_all([written], timeout_s=60)[written]["status"] == "completed"
        query = new_id(f"rw-query-{index}")
        data = {"text": code, "mode": "hybrid", "k": 3}
        assert fleet.post(query, "query", data).status_code == 202
        record = fleet.wait_all([query], timeout_s=60)[query]
        assert record["status"] == "completed", record
        matches = record["result"]["matches"]
        assert matches and matches[0]["id"].startswith(f"rw-{code}"), (index, matches)
        handled.append(fleet.worker_of(query))
    # Idle workers take turns at the broker (in runs of one or two here): the check is that
    # both ran queries and changed places often, so no worker only ever read its own writes.
    switches = sum(a != b for a, b in zip(handled, handled[1:], strict=False))
    assert min(handled.count(0), handled.count(1)) >= 5 and switches >= 5, handled


def test_sse_on_the_api_carries_segments_decoded_by_a_worker(fleet: Fleet) -> None:
    event_id = new_id("sse")
    data = {"audio_base64": jfk(), "language": "en", "lookup": False}
    assert fleet.post(event_id, "speech", data).status_code == 202
    types: list[str] = []
    url = f"{fleet.api.url}/events/{event_id}/stream"
    with httpx.stream("GET", url, headers=AUTH, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line[6:])
                types.append(message["type"])
                if message["type"] == "status" and message["status"] in TERMINAL:
                    break
    assert "segment" in types and "transcript" in types, types
    assert fleet.get(event_id)["status"] == "completed"


def test_a_diarized_event_is_labelled_by_a_worker_not_the_api(fleet: Fleet, tmp_path: Path) -> None:
    audio = encoded(two_speakers().audio, tmp_path, "conversation")
    event_id = new_id("diarize")
    data = {"audio_base64": base64.b64encode(audio).decode(), "lookup": False, "diarize": True}
    assert fleet.post(event_id, "speech", data).status_code == 202
    record = fleet.wait_all([event_id])[event_id]
    assert record["status"] == "completed", record
    speakers = record["result"]["transcript"]["speakers"]
    assert [s["speaker"] for s in speakers] == ["SPEAKER_00", "SPEAKER_01"]
    assert record["attempts"] == 1  # ran exactly once
    status = httpx.get(f"{fleet.api.url}/status", timeout=30).json()
    assert status["models"] == {"whisper": None, "embedding": None}


def test_the_openai_api_awaits_a_worker_through_the_live_channel(fleet: Fleet) -> None:
    with openai.OpenAI(base_url=f"{fleet.api.url}/v1", api_key=TOKENS[0]) as sdk:
        with (DATA / "jfk.wav").open("rb") as audio:
            plain = sdk.audio.transcriptions.create(file=audio, model="whisper-1")
        with (DATA / "jfk.wav").open("rb") as audio:
            stream = sdk.audio.transcriptions.create(file=audio, model="whisper-1", stream=True)
            *deltas, done = list(stream)
    assert "ask not what your country" in plain.text.lower()
    assert deltas and done.type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == done.text


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_a_realtime_session_decodes_on_the_api_and_its_event_completes_on_a_worker(
    fleet: Fleet,
) -> None:
    sdk = client(fleet.api.url, TOKENS[0])
    with sdk.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        listener = Listener(connection)
        created = listener.wait_for(lambda r: bool(r.of("session.created")))
        event_id = created.of("session.created")[0]["session"]["skyhigh_event_id"]
        connection.send({"type": "session.update", "session": session_update()})
        listener.wait_for(lambda r: bool(r.of("session.updated")))
        # Twice real time: at four times a busy fleet decoded no partial turn before each closed.
        stream(connection, pcm16(DATA / "jfk.wav"), 48_000, pace=0.5)
        received = listener.wait_for(turns_settled)
    # Live turns decoded by the API's realtime model, while the speech streamed.
    assert received.of("conversation.item.input_audio_transcription.delta")
    assert wer(jfk_reference(), received.completed_text) < 0.15, received.completed_text
    deadline = time.monotonic() + 30  # the session becomes an event once its socket closed
    while httpx.get(f"{fleet.api.url}/events/{event_id}", headers=AUTH).status_code == 404:
        assert time.monotonic() < deadline, "the session did not become an event"
        time.sleep(0.2)
    record = fleet.wait_all([event_id])[event_id]
    assert record["status"] == "completed" and record["attempts"] == 1, record
    assert wer(jfk_reference(), record["result"]["transcript"]["text"]) < 0.15
    assert fleet.worker_of(event_id) in (0, 1)  # transcribed in full by an events worker
    status = httpx.get(f"{fleet.api.url}/status", timeout=30).json()
    assert status["models"] == {"whisper": None, "embedding": None}


def test_a_killed_worker_loses_its_event_to_another_which_completes_it_once(fleet: Fleet) -> None:
    event_id = new_id("killed")
    data = {"audio_base64": long_clip(), "language": "en", "lookup": False}
    assert fleet.post(event_id, "speech", data).status_code == 202
    deadline = time.monotonic() + 120
    while (owner := fleet.lease_owner(event_id)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert owner is not None, "no worker claimed the event"
    victim = next(w for w in fleet.workers if f":{w.pid}:" in owner)
    time.sleep(1.0)  # well inside the transcription
    victim.kill()
    killed_pid = victim.pid
    # Back at once, as a supervisor would: a new process (another owner) that loads its models
    # while the lease runs out; the tests that need both workers wait for it (Fleet.whole).
    victim.start()
    record = fleet.wait_all([event_id], timeout_s=300)[event_id]
    assert record["status"] == "completed" and record["attempts"] == 2, record
    assert f":{killed_pid}:" not in (fleet.lease_owner(event_id) or "")


def test_a_killed_api_loses_nothing_it_accepted(fleet: Fleet) -> None:
    ids = [new_id("api-crash") for _ in range(10)]
    for event_id in ids:
        assert (
            fleet.post(event_id, "query", {"text": "pets in the cabin", "k": 1}).status_code == 202
        )
    fleet.api.kill()
    fleet.api.start()
    records = fleet.wait_all(ids)
    assert {r["status"] for r in records.values()} == {"completed"}


def test_redis_restarting_empty_loses_no_event(fleet: Fleet) -> None:
    ids = [new_id("redis-lost") for _ in range(12)]
    for index, event_id in enumerate(ids):
        data = {"text": f"baggage allowance {index}", "k": 1}
        assert fleet.post(event_id, "query", data).status_code == 202
        if index == 5:
            # Mid-load: the broker dies with whatever it held and comes back empty.
            fleet.redis.kill()
            fleet.redis.start()
    records = fleet.wait_all(ids, timeout_s=180)
    assert {r["status"] for r in records.values()} == {"completed"}


def test_a_backlog_of_long_uploads_delays_another_principal_by_one_event_per_worker(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Fair claims: a second principal (JWT, through a second API process on the same store
    and broker) sends one query behind a backlog of long uploads from the static principal.
    FIFO would start it after the whole backlog; fair claims after the events already running."""
    env = {**fleet.env, "AUTH_MODE": "jwt", "JWT_SECRET": JWT_SECRET}
    env["SPOOL_DIR"] = str(tmp_path / "spool")
    second_api = ServerProcess(env, tmp_path / "api-jwt.log")
    backlog = [new_id(f"backlog-{i}") for i in range(5)]
    try:
        # The second API starts while a worker killed by an earlier test may still be loading;
        # both are up before the backlog is sent, so bob's query arrives while the long clips
        # still run (started after them, a slow start could outlast the clips).
        with ThreadPoolExecutor(1) as pool:
            started = pool.submit(second_api.start)
            fleet.whole()
            started.result()
        # Long clips occupy both workers; the rest queue behind them. Their length does
        # not matter (FIFO would start every one of them before bob's query), so short.
        for index, event_id in enumerate(backlog):
            audio = long_clip() if index < len(fleet.workers) else jfk()
            data = {"audio_base64": audio, "language": "en", "lookup": False}
            assert fleet.post(event_id, "speech", data).status_code == 202
        deadline = time.monotonic() + 120
        while running(fleet, backlog) < len(fleet.workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running(fleet, backlog) == len(fleet.workers), "the backlog never occupied both"
        claims = {"sub": "fair-bob", "exp": int(time.time()) + 600}
        bob = {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}
        body = {"event_id": "fair-query", "event_type": "query", "event_data": {"text": "pets"}}
        response = httpx.post(f"{second_api.url}/events/", json=body, headers=bob, timeout=30)
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            record = httpx.get(f"{second_api.url}/events/fair-query", headers=bob, timeout=30)
            if record.json()["status"] in TERMINAL:
                break
            time.sleep(0.05)
        assert record.json()["status"] == "completed", record.text
        rows = fleet.sql(
            "SELECT count(*) FROM events WHERE event_id = ANY(%s) AND started_at < "
            "(SELECT started_at FROM events WHERE owner = 'jwt:fair-bob')",
            backlog,
        )
        started_before = rows[0][0]
        # The events running when it arrived, and at most one claim racing its arrival.
        assert started_before <= len(fleet.workers) + 1 < len(backlog), started_before
    finally:
        second_api.stop()
        records = fleet.wait_all(backlog, timeout_s=400)
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in records.values())


def running(fleet: Fleet, event_ids: list[str]) -> int:
    rows = fleet.sql(
        "SELECT count(*) FROM events WHERE event_id = ANY(%s) AND status = 'processing'",
        event_ids,
    )
    return int(rows[0][0])
