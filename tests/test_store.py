"""EventStore (on SQLite and on a real Postgres) and InProcessDispatcher as units: lifecycle,
idempotency, leases, recovery, limits, migrations."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy

from skyhigh.domain.errors import EventConflict, InvalidCursor
from skyhigh.domain.events import EventError, EventStatus
from skyhigh.intake.batcher import IntakeBatcher
from skyhigh.processing.dispatch import InProcessDispatcher
from skyhigh.store.events import EventStore, NewEvent
from tests.support.services import PostgresServer


def claim(store: EventStore, event_id: str, *, owner: str = "w1", lease_s: float = 60) -> Any:
    return store.claim(event_id, max_attempts=MAX_ATTEMPTS, owner=owner, lease_s=lease_s)


MAX_ATTEMPTS = 3


def new(event_id: str, digest: str = "a" * 64) -> NewEvent:
    return NewEvent(event_id, "query", digest, {"text": "hi"})


def test_create_is_idempotent_and_detects_conflicts(store: EventStore) -> None:
    first = store.create(new("e1"))
    assert first.created and first.record.status == EventStatus.QUEUED
    assert store.get("e1").queue_position == 0
    again = store.create(new("e1"))
    assert not again.created and again.record.event_id == "e1"
    with pytest.raises(EventConflict):
        store.create(new("e1", digest="b" * 64))


def test_group_commit_keeps_per_event_outcomes(store: EventStore) -> None:
    store.create(new("old"))
    outcomes = store.create_many(
        [new("a"), new("old"), new("a"), new("old", digest="c" * 64), new("b")]
    )
    created = [getattr(o, "created", None) for o in outcomes]
    assert created == [True, False, False, None, True]  # duplicate in batch = replay
    assert isinstance(outcomes[3], EventConflict)
    assert [r.event_id for r in store.list_events().items] == ["b", "a", "old"]


def test_the_intake_batcher_commits_requests_together_and_settles_each(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests sent together share transactions; each gets its own outcome, a store failure
    fails only the requests of its batch, and `stop` commits what was handed in before it."""
    batches: list[int] = []
    real_create_many = store.create_many

    def create_many(news: Any) -> Any:
        batches.append(len(news))
        if any(n.key == "boom" for n in news):
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real_create_many(news)

    monkeypatch.setattr(store, "create_many", create_many)
    store.create(new("old"))

    async def scenario() -> tuple[list[Any], Any, Any, Any]:
        batcher = IntakeBatcher(store)
        batcher.start()
        news = [new(f"e{i}") for i in range(40)] + [new("old"), new("old", digest="b" * 64)]
        outcomes = await asyncio.gather(*(batcher.create(n) for n in news), return_exceptions=True)
        failed = await asyncio.gather(batcher.create(new("boom")), return_exceptions=True)
        after = await batcher.create(new("after"))
        last = asyncio.ensure_future(batcher.create(new("last")))
        await asyncio.sleep(0)  # handed in before stop
        await batcher.stop()
        return outcomes, failed[0], after, last.result()

    outcomes, failed, after, last = asyncio.run(scenario())
    assert [o.created for o in outcomes[:41]] == [True] * 40 + [False]
    assert isinstance(outcomes[41], EventConflict)
    assert isinstance(failed, sqlalchemy.exc.OperationalError)
    assert after.created and last.created  # the batcher went on after a failed batch
    assert len(batches) < 40  # not one transaction per request
    assert {r.event_id for r in store.list_events(limit=100).items} == {
        *(f"e{i}" for i in range(40)),
        "old",
        "after",
        "last",
    }


@pytest.mark.slow
def test_intake_inserts_survive_a_dropped_postgres_connection(postgres: PostgresServer) -> None:
    """Intake's connections are not pinged at checkout: a batch that meets one the server
    dropped (as after a restart) is sent again on a new connection."""
    store = EventStore(postgres.new_database())
    try:
        assert store.create(new("before")).created  # the pool now holds a connection
        url = store.engine.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert dropped is not None and dropped[0] >= 1
        outcomes = store.create_many([new("after-1"), new("after-2")])
        assert [getattr(o, "created", None) for o in outcomes] == [True, True]
        assert store.get("after-2").status == EventStatus.QUEUED
    finally:
        store.close()


def test_group_commit_stores_every_column(store: EventStore) -> None:
    payload = {"text": 'Grüße, 東京 "quoted"', "k": 3, "nested": {"list": [1, None, True]}}
    store.create_many(
        [
            NewEvent("full", "query", "d" * 64, payload, owner="jwt:alice", request_id="req-1"),
            NewEvent("bare", "query", "e" * 64, {}),
        ]
    )
    with store.engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT event_id, owner, event_type, body_sha256, payload, status, request_id,"
                " attempts, created_at = enqueued_at FROM events ORDER BY seq"
            )
        ).all()
    # SQLite hands the JSON column back as text, Postgres as a dict.
    stored = [(*r[:4], r[4] if isinstance(r[4], dict) else json.loads(r[4]), *r[5:]) for r in rows]
    assert stored == [
        ("full", "jwt:alice", "query", "d" * 64, payload, "queued", "req-1", 0, True),
        ("bare", "token", "query", "e" * 64, {}, "queued", None, 0, True),
    ]
    assert store.get("full").created_at == store.get("bare").created_at


def test_claim_happens_once_and_counts_attempts(store: EventStore) -> None:
    store.create(new("e1"))
    claimed = claim(store, "e1")
    assert claimed is not None and claimed.attempts == 1
    assert claim(store, "e1", owner="w2") is None  # leased: a duplicate hint is a no-op
    assert store.complete("e1", {"ok": True}, owner="w1") is not None
    record = store.get("e1")
    assert record.status == EventStatus.COMPLETED and record.result == {"ok": True}
    assert claim(store, "e1") is None  # finished events are never re-run


def test_recover_requeues_processing_and_gives_up_after_max_attempts(store: EventStore) -> None:
    store.create(new("crashy"))
    store.create(new("waiting"))
    for _ in range(2):  # two "crashes" while processing
        assert store.claim("crashy", max_attempts=2, owner="w", lease_s=60) is not None
        assert store.recover() == ["crashy", "waiting"]
    assert store.claim("crashy", max_attempts=2, owner="w", lease_s=60) is None
    record = store.get("crashy")
    assert record.status == EventStatus.FAILED
    assert record.error is not None and record.error.code == "max_attempts"
    assert record.attempts == 2


def test_queue_position_and_requeue(store: EventStore) -> None:
    for event_id in ("a", "b", "c"):
        store.create(new(event_id))
    assert [store.get(e).queue_position for e in ("a", "b", "c")] == [0, 1, 2]
    claim(store, "a")
    assert store.get("b").queue_position == 0
    store.requeue("a")
    assert store.get("a").status == EventStatus.QUEUED


def test_list_pages_and_rejects_foreign_cursors(store: EventStore) -> None:
    for index in range(5):
        store.create(new(f"e{index}"))
    claim(store, "e0")
    store.fail("e0", EventError(code="x", message="y"))
    first = store.list_events(limit=3)
    assert [r.event_id for r in first.items] == ["e4", "e3", "e2"]
    assert first.next_cursor is not None
    second = store.list_events(limit=3, cursor=first.next_cursor)
    assert [r.event_id for r in second.items] == ["e1", "e0"] and second.next_cursor is None
    assert [r.event_id for r in store.list_events(status=EventStatus.FAILED).items] == ["e0"]
    with pytest.raises(InvalidCursor):
        store.list_events(cursor="bm90LWEtY3Vyc29y")


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_conclude(
    store: EventStore,
) -> None:
    store.create(new("e1"))
    assert claim(store, "e1", owner="dead", lease_s=0.2) is not None
    assert claim(store, "e1", owner="alive") is None  # the lease still runs
    time.sleep(0.3)
    assert store.stale(requeue_after_s=3600) == [("e1", "query")]  # the sweeper's hint
    taken = claim(store, "e1", owner="alive")
    assert taken is not None and taken.attempts == 2
    assert not store.renew("e1", owner="dead", lease_s=60)
    assert store.complete("e1", {"by": "dead"}, owner="dead") is None  # nothing written
    assert store.renew("e1", owner="alive", lease_s=60)
    assert store.complete("e1", {"by": "alive"}, owner="alive") is not None
    assert store.get("e1").result == {"by": "alive"} and store.get("e1").attempts == 2


def test_stale_finds_never_enqueued_events_and_marks_them(store: EventStore) -> None:
    store.create(new("fresh"))
    assert store.stale(requeue_after_s=60) == []  # enqueued at creation, not stale yet
    store.create(new("lost"))
    time.sleep(0.2)
    assert {e for e, _ in store.stale(requeue_after_s=0.1)} == {"fresh", "lost"}
    assert store.stale(requeue_after_s=0.1) == []  # marked: the next sweep waits again
    assert store.count_active() == 2


def test_concurrent_claims_have_one_winner(store: EventStore) -> None:
    store.create(new("race"))
    winners: list[str] = []

    def claimer(owner: str) -> None:
        if claim(store, "race", owner=owner) is not None:
            winners.append(owner)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and store.get("race").attempts == 1


def test_a_database_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:  # the first release's schema, made by create_all
        connection.exec_driver_sql(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id VARCHAR(128) UNIQUE, "
            "event_type VARCHAR(64), body_sha256 VARCHAR(64), payload JSON, status VARCHAR(16), "
            "request_id VARCHAR(64), attempts INTEGER, created_at DATETIME, started_at DATETIME, "
            "finished_at DATETIME, result JSON, error_code VARCHAR(64), "
            "error_message VARCHAR(2000))"
        )
        connection.exec_driver_sql(
            "INSERT INTO events (event_id, event_type, body_sha256, payload, status, attempts, "
            "created_at) VALUES ('old-1', 'query', 'x', '{}', 'queued', 0, '2026-01-01 00:00:00')"
        )
    engine.dispose()
    store = EventStore(url)
    assert store.get("old-1").status == EventStatus.QUEUED
    assert claim(store, "old-1") is not None  # the lease columns exist now
    store.close()


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_events_from_before_tenancy_belong_to_the_static_principal(
    request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    from alembic import command

    from skyhigh.domain.tenancy import event_key
    from skyhigh.store.migrate import _config

    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'v2.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:  # the schema of revision 0002, with one event in it
        command.upgrade(_config(connection), "0002")
        connection.exec_driver_sql(
            "INSERT INTO events (event_id, event_type, body_sha256, payload, status, attempts, "
            "created_at) VALUES ('before-1', 'query', 'x', '{}', 'queued', 0, "
            "'2026-01-01 00:00:00')"
        )
    engine.dispose()
    store = EventStore(url)  # upgrades to head
    try:
        assert store.get("before-1").status == EventStatus.QUEUED
        assert [r.event_id for r in store.list_events(owner="token").items] == ["before-1"]
        assert store.list_events(owner="jwt:alice").items == []
        # Keys of other principals are longer than the old 128-character column.
        key = event_key("jwt:alice", "a" * 128)
        assert key is not None and len(key) > 128
        store.create(NewEvent(key, "query", "d" * 64, {}, owner="jwt:alice"))
        assert store.get(key).event_id == "a" * 128
        (mine,) = store.list_events(owner="jwt:alice", show_owner=True).items
        assert mine.owner == "jwt:alice"
    finally:
        store.close()


def test_dispatcher_bounds_pending_work_and_survives_crashing_steps() -> None:
    release = threading.Event()
    done: list[str] = []

    def process(event_id: str) -> None:
        release.wait(5)
        if event_id == "boom":
            raise RuntimeError("step crashed")
        done.append(event_id)

    dispatcher = InProcessDispatcher(
        process, concurrency=1, max_pending=2, retries=2, retry_after_s=0.01
    )
    dispatcher.start([])
    assert dispatcher.reserve() and dispatcher.reserve()
    assert not dispatcher.reserve()  # full: the API answers 503
    dispatcher.submit("boom", event_type="query")
    dispatcher.submit("ok", event_type="query")
    release.set()
    unfinished = dispatcher.stop(grace_s=5) if _drain(dispatcher) else ["timeout"]
    assert unfinished == [] and done == ["ok"] and dispatcher.pending() == 0


def test_dispatcher_tries_an_event_again_when_the_store_failed_around_it() -> None:
    tries: list[str] = []

    def process(key: str) -> None:
        tries.append(key)
        if len(tries) == 1:  # e.g. a claim that met SQLite's busy timeout
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))

    dispatcher = InProcessDispatcher(process, concurrency=1, max_pending=5, retry_after_s=0.01)
    dispatcher.start([])
    assert dispatcher.reserve()
    dispatcher.submit("e1", event_type="query")
    assert _drain(dispatcher)
    dispatcher.stop(grace_s=5)
    assert tries == ["e1", "e1"]


def _drain(dispatcher: InProcessDispatcher, timeout_s: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while dispatcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    return dispatcher.pending() == 0
