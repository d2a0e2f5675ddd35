"""How the Celery sender packs hints into messages and how a worker shares a message out (the
fleet tests in test_scale_out.py run them through real workers and a real Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from celery import Celery

from skyhigh.config import ProcessingSettings
from skyhigh.processing import celery_dispatch
from skyhigh.processing.celery_app import EVENTS_QUEUE, KNOWLEDGE_QUEUE, PROCESS_EVENTS
from skyhigh.processing.celery_dispatch import (
    KEYS_PER_WORKER,
    CeleryDispatcher,
    messages,
    worker_share,
)
from skyhigh.store.events import EventStore


def test_keys_are_grouped_by_queue_in_order_one_message_each() -> None:
    batch = [(f"q{i}", "query") for i in range(KEYS_PER_WORKER + 2)]
    batch.insert(3, ("d1", "document"))
    batch.append(("d2", "document_delete"))
    packed = messages(batch)
    assert packed == [
        (EVENTS_QUEUE, [f"q{i}" for i in range(KEYS_PER_WORKER + 2)]),
        (KNOWLEDGE_QUEUE, ["d1", "d2"]),
    ]
    assert sorted(i for _, ids in packed for i in ids) == sorted(i for i, _ in batch)


def test_audio_events_travel_one_per_message() -> None:
    batch = [(f"s{i}", "speech") for i in range(3)] + [("q1", "query"), ("q2", "query")]
    assert messages(batch) == [
        (EVENTS_QUEUE, ["s0"]),
        (EVENTS_QUEUE, ["s1"]),
        (EVENTS_QUEUE, ["s2"]),
        (EVENTS_QUEUE, ["q1", "q2"]),
    ]


def test_a_worker_keeps_its_share_and_forwards_the_rest_in_shares() -> None:
    keys = [f"k{i}" for i in range(2 * KEYS_PER_WORKER + 3)]
    mine, forwards = worker_share(keys)
    assert mine == keys[:KEYS_PER_WORKER]
    assert forwards == [keys[KEYS_PER_WORKER : 2 * KEYS_PER_WORKER], keys[2 * KEYS_PER_WORKER :]]
    assert worker_share(keys[:KEYS_PER_WORKER]) == (keys[:KEYS_PER_WORKER], [])


class _RecordingApp:
    """Stands in for the Celery app: records each message sent and when."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, list[str]]] = []

    @contextmanager
    def producer_or_acquire(self) -> Iterator[None]:
        yield None

    def send_task(self, name: str, *, args: list[Any], queue: str, producer: None) -> None:
        assert name == PROCESS_EVENTS
        self.sent.append((time.monotonic(), queue, list(args[0])))


class _EmptyStore:
    def count_active(self) -> int:
        return 0


def test_the_sender_sends_at_once_after_a_quiet_spell_and_gathers_a_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(celery_dispatch, "HINT_ROUND_S", 1.0)  # wide: no race with the test
    app = _RecordingApp()
    dispatcher = CeleryDispatcher(
        cast(Celery, app),
        cast(EventStore, _EmptyStore()),
        ProcessingSettings(queue_url="redis://127.0.0.1:1/0"),  # never connected to
        max_pending=1000,
    )
    dispatcher.start([])
    try:
        started = time.monotonic()
        dispatcher.submit("first", event_type="query")
        _wait_for(lambda: len(app.sent) == 1)
        assert app.sent[0][1:] == (EVENTS_QUEUE, ["first"])
        assert app.sent[0][0] - started < 0.5  # not held back for a round
        burst = [f"q{i}" for i in range(30)]
        for key in burst:
            dispatcher.submit(key, event_type="query")
        dispatcher.submit("s1", event_type="speech")
        _wait_for(lambda: len(app.sent) == 3)
    finally:
        dispatcher.stop(grace_s=5)
    # The burst came within the first round's interval: one round, audio on its own.
    assert [sent[1:] for sent in app.sent[1:]] == [(EVENTS_QUEUE, ["s1"]), (EVENTS_QUEUE, burst)]
    assert app.sent[1][0] - app.sent[0][0] >= 0.9


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
