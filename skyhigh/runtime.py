"""What one API process runs: the store, the loaded models, the pipeline and the dispatcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from skyhigh.dispatch import Dispatcher, InProcessDispatcher
from skyhigh.pipeline import Pipeline
from skyhigh.security import TokenVerifier
from skyhigh.services import Services, load_services
from skyhigh.settings import Settings
from skyhigh.store import EventStore

log = logging.getLogger("skyhigh.runtime")


@dataclass
class Runtime:
    settings: Settings
    store: EventStore
    services: Services
    pipeline: Pipeline
    dispatcher: Dispatcher
    verifier: TokenVerifier


def start_runtime(settings: Settings) -> Runtime:
    """Open the store, load models, recover unfinished events and start the workers.

    Blocking: the lifespan runs it in a thread before the server takes requests.
    """
    settings.validate_auth()
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    store = EventStore(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    services = load_services(settings)
    pipeline = Pipeline(store, services)
    dispatcher = InProcessDispatcher(
        pipeline.process,
        concurrency=settings.worker_concurrency,
        max_pending=settings.max_pending_events,
    )
    dispatcher.start(store.recover())
    return Runtime(settings, store, services, pipeline, dispatcher, TokenVerifier(settings))


def stop_runtime(runtime: Runtime) -> None:
    """Let running events finish within the grace period; put the rest back in the queue."""
    unfinished = runtime.dispatcher.stop(grace_s=runtime.settings.shutdown_grace_s)
    for event_id in unfinished:
        runtime.store.requeue(event_id)
    if unfinished:
        log.info("requeued running events at shutdown", extra={"count": len(unfinished)})
    runtime.store.close()
