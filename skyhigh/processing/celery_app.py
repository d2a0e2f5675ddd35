"""Celery wiring shared by the API (which sends) and the workers (which run): app, queues, task.

Celery carries hints only ("event e1 is waiting"); the store decides who runs what (leases),
so every setting here errs on the side of delivering again rather than losing:
- `task_acks_late` + `task_reject_on_worker_lost`: a task is acknowledged after it ran, and a
  worker killed mid-task gives its message back;
- `worker_prefetch_multiplier=1`: a busy worker does not hoard messages an idle one could run;
- the Redis visibility timeout (QUEUE_VISIBILITY_TIMEOUT_S) is longer than any event may run,
  so a long transcription is not handed to a second worker while the first still works on it;
- soft shutdown: on SIGTERM a worker finishes its event within SHUTDOWN_GRACE_S, then stops.

A message names an event, but the worker runs the next event in fair order among the types
of the message's queue (skyhigh.store.event_leases.claim_next): owners take turns in the store,
so one owner's backlog in the broker's first-in-first-out list does not hold up the others.

Knowledge writes (the registry's `writes_knowledge` types) go to their own queue, which one
worker process consumes with concurrency 1: one writer per LanceDB table, whichever API
accepted them.
"""

from __future__ import annotations

from celery import Celery

from skyhigh.config import ProcessingSettings
from skyhigh.processing.registry import EVENT_TYPES, writes_knowledge

PROCESS_EVENT = "skyhigh.process_event"  # one id per message (still run: older senders, probes)
PROCESS_EVENTS = "skyhigh.process_events"  # several keys per message, what the API sends
EVENTS_QUEUE = "events"
KNOWLEDGE_QUEUE = "knowledge"


def queue_for(event_type: str) -> str:
    return KNOWLEDGE_QUEUE if writes_knowledge(event_type) else EVENTS_QUEUE


def queue_peers(event_type: str) -> frozenset[str]:
    """The event types that travel on `event_type`'s queue (itself included): what a worker
    woken by a message for one of them may claim in its place (fair claims)."""
    queue = queue_for(event_type)
    return frozenset({event_type, *(t for t in EVENT_TYPES if queue_for(t) == queue)})


def make_celery(settings: ProcessingSettings) -> Celery:
    if not settings.queue_url:
        raise ValueError("QUEUE_URL is not set: the Celery dispatcher needs a broker")
    app = Celery("skyhigh", broker=settings.queue_url, set_as_current=False)
    transport = {"visibility_timeout": int(settings.queue_visibility_timeout_s)}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=EVENTS_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_soft_shutdown_timeout=settings.shutdown_grace_s,
        worker_enable_soft_shutdown_on_idle=True,
        # Prefork children load the models before they report alive (default: 4 s).
        worker_proc_alive_timeout=300,
        worker_hijack_root_logger=False,
    )
    return app
