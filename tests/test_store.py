"""EventStore and InProcessDispatcher as units: lifecycle, idempotency, recovery, limits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from skyhigh.domain.errors import EventConflict, InvalidCursor
from skyhigh.domain.events import EventError, EventStatus
from skyhigh.processing.dispatch import InProcessDispatcher
from skyhigh.store.events import EventStore, NewEvent


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / 'events.db'}")


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


def test_claim_happens_once_and_counts_attempts(store: EventStore) -> None:
    store.create(new("e1"))
    claimed = store.claim("e1", max_attempts=3)
    assert claimed is not None and claimed.attempts == 1
    assert store.claim("e1", max_attempts=3) is None  # already processing
    store.complete("e1", {"ok": True})
    record = store.get("e1")
    assert record.status == EventStatus.COMPLETED and record.result == {"ok": True}
    assert store.claim("e1", max_attempts=3) is None  # finished events are never re-run


def test_recover_requeues_processing_and_gives_up_after_max_attempts(store: EventStore) -> None:
    store.create(new("crashy"))
    store.create(new("waiting"))
    for _ in range(2):  # two "crashes" while processing
        assert store.claim("crashy", max_attempts=2) is not None
        assert store.recover() == ["crashy", "waiting"]
    assert store.claim("crashy", max_attempts=2) is None
    record = store.get("crashy")
    assert record.status == EventStatus.FAILED
    assert record.error is not None and record.error.code == "max_attempts"
    assert record.attempts == 2


def test_queue_position_and_requeue(store: EventStore) -> None:
    for event_id in ("a", "b", "c"):
        store.create(new(event_id))
    assert [store.get(e).queue_position for e in ("a", "b", "c")] == [0, 1, 2]
    store.claim("a", max_attempts=3)
    assert store.get("b").queue_position == 0
    store.requeue("a")
    assert store.get("a").status == EventStatus.QUEUED


def test_list_pages_and_rejects_foreign_cursors(store: EventStore) -> None:
    for index in range(5):
        store.create(new(f"e{index}"))
    store.claim("e0", max_attempts=3)
    store.fail("e0", EventError(code="x", message="y"))
    first = store.list_events(limit=3)
    assert [r.event_id for r in first.items] == ["e4", "e3", "e2"]
    assert first.next_cursor is not None
    second = store.list_events(limit=3, cursor=first.next_cursor)
    assert [r.event_id for r in second.items] == ["e1", "e0"] and second.next_cursor is None
    assert [r.event_id for r in store.list_events(status=EventStatus.FAILED).items] == ["e0"]
    with pytest.raises(InvalidCursor):
        store.list_events(cursor="bm90LWEtY3Vyc29y")


def test_dispatcher_bounds_pending_work_and_survives_crashing_steps() -> None:
    release = threading.Event()
    done: list[str] = []

    def process(event_id: str) -> None:
        release.wait(5)
        if event_id == "boom":
            raise RuntimeError("step crashed")
        done.append(event_id)

    dispatcher = InProcessDispatcher(process, concurrency=1, max_pending=2)
    dispatcher.start([])
    assert dispatcher.reserve() and dispatcher.reserve()
    assert not dispatcher.reserve()  # full: the API answers 503
    dispatcher.submit("boom")
    dispatcher.submit("ok")
    release.set()
    unfinished = dispatcher.stop(grace_s=5) if _drain(dispatcher) else ["timeout"]
    assert unfinished == [] and done == ["ok"] and dispatcher.pending() == 0


def _drain(dispatcher: InProcessDispatcher, timeout_s: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while dispatcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    return dispatcher.pending() == 0
