"""Fair claims (EventStore.claim_next, scale mode) on SQLite and on a real Postgres: owners take
turns whatever order the events arrived in, each event is claimed once, and the claim keeps
the lease rules of a named claim (expired leases taken over, MAX_ATTEMPTS)."""

from __future__ import annotations

import threading
import time

from skyhigh.domain.events import EventStatus
from skyhigh.processing.celery_app import queue_peers
from skyhigh.store.event_rows import ClaimedEvent
from skyhigh.store.events import EventStore, NewEvent

MAX_ATTEMPTS = 3
EVENTS = queue_peers("query")  # the events queue's types: query, speech


def new(key: str, owner: str, event_type: str = "speech") -> NewEvent:
    return NewEvent(key, event_type, "a" * 64, {"n": key}, owner=owner)


def claim_next(
    store: EventStore, worker: str = "w1", lease_s: float = 60, types: frozenset[str] = EVENTS
) -> ClaimedEvent | None:
    return store.claim_next(types, max_attempts=MAX_ATTEMPTS, owner=worker, lease_s=lease_s)


def finish(store: EventStore, claimed: ClaimedEvent | None, worker: str = "w1") -> str:
    assert claimed is not None
    assert store.complete(claimed.key, {}, owner=worker) is not None
    return claimed.key


def test_a_backlog_does_not_hold_up_another_owner(store: EventStore) -> None:
    for index in range(6):
        store.create(new(f"a{index}", "alice"))
    assert finish(store, claim_next(store)) == "a0"
    store.create(new("b0", "bob", "query"))  # arrives behind alice's backlog
    order = [finish(store, claim_next(store)) for _ in range(6)]
    # bob has never been served: his event is next, then alice's backlog in arrival order.
    assert order == ["b0", "a1", "a2", "a3", "a4", "a5"]
    assert claim_next(store) is None


def test_owners_with_backlogs_alternate(store: EventStore) -> None:
    for index in range(3):
        store.create(new(f"a{index}", "alice"))
    for index in range(3):
        store.create(new(f"b{index}", "bob"))
    order = [finish(store, claim_next(store)) for _ in range(6)]
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_only_the_given_types_are_claimed(store: EventStore) -> None:
    store.create(new("doc", "alice", "document"))
    store.create(new("q", "alice", "query"))
    assert finish(store, claim_next(store)) == "q"
    assert claim_next(store) is None
    knowledge = queue_peers("document")
    assert finish(store, claim_next(store, types=knowledge)) == "doc"


def test_an_expired_lease_is_taken_over_and_attempts_are_enforced(store: EventStore) -> None:
    store.create(new("lost", "alice"))
    first = claim_next(store, worker="dead", lease_s=0.05)
    assert first is not None and first.attempts == 1
    assert claim_next(store, worker="w2") is None  # leased: not claimable yet
    time.sleep(0.1)
    second = claim_next(store, worker="w2", lease_s=0.05)
    assert second is not None and second.key == "lost" and second.attempts == 2
    time.sleep(0.1)
    third = claim_next(store, worker="w3", lease_s=0.05)
    assert third is not None and third.attempts == 3
    time.sleep(0.1)
    assert claim_next(store, worker="w4") is None  # out of attempts: failed, not claimed
    assert store.get("lost").status == EventStatus.FAILED


def test_concurrent_fair_claims_take_each_event_once(store: EventStore) -> None:
    for index in range(24):
        store.create(new(f"e{index}", f"owner{index % 3}", "query"))
    taken: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (claimed := claim_next(store, worker=name)) is not None:
            with lock:
                taken.append(claimed.key)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(f"e{index}" for index in range(24))
    assert all(store.get(key).attempts == 1 for key in taken)
