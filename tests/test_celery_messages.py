"""How the Celery sender packs hints into messages (the fleet tests in test_scale_out.py run
them through real workers)."""

from __future__ import annotations

from skyhigh.processing.celery_app import EVENTS_QUEUE, KNOWLEDGE_QUEUE
from skyhigh.processing.celery_dispatch import IDS_PER_MESSAGE, messages


def test_ids_are_grouped_by_queue_in_order_and_capped_per_message() -> None:
    batch = [(f"q{i}", "query") for i in range(IDS_PER_MESSAGE + 2)]
    batch.insert(3, ("d1", "document"))
    batch.append(("d2", "document_delete"))
    packed = messages(batch)
    assert packed == [
        (EVENTS_QUEUE, [f"q{i}" for i in range(IDS_PER_MESSAGE)]),
        (EVENTS_QUEUE, [f"q{IDS_PER_MESSAGE}", f"q{IDS_PER_MESSAGE + 1}"]),
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
