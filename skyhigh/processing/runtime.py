"""What one API process runs: the store, the loaded models, the pipeline and the dispatcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from skyhigh.api.tokens import TokenVerifier
from skyhigh.config import Settings
from skyhigh.live.publish import FanOut
from skyhigh.live.streams import StreamBus
from skyhigh.processing.dispatch import Dispatcher, InProcessDispatcher
from skyhigh.processing.pipeline import Pipeline
from skyhigh.processing.services import Services, load_services
from skyhigh.store.events import EventStore
from skyhigh.webhooks.sender import Webhooks

log = logging.getLogger("skyhigh.processing.runtime")


@dataclass
class Runtime:
    settings: Settings
    store: EventStore
    services: Services
    pipeline: Pipeline
    dispatcher: Dispatcher
    verifier: TokenVerifier
    streams: StreamBus  # live WS/SSE subscribers (skyhigh.live.streams)
    webhooks: Webhooks


def start_runtime(settings: Settings) -> Runtime:
    """Open the store, load models, recover unfinished events and start the workers.

    Blocking: the lifespan runs it in a thread before the server takes requests.
    """
    settings.auth.validate_auth()
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    store = EventStore(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    webhooks = Webhooks(settings.webhooks, store)  # checks the webhook settings before models load
    services = load_services(settings)
    streams = StreamBus()
    # The bus first: live subscribers see the outcome before webhook bookkeeping runs.
    pipeline = Pipeline(store, services, publisher=FanOut([streams, webhooks]))
    dispatcher = InProcessDispatcher(
        pipeline.process,
        concurrency=settings.worker_concurrency,
        max_pending=settings.max_pending_events,
    )
    dispatcher.start(store.recover())
    webhooks.start()
    verifier = TokenVerifier(settings.auth)
    return Runtime(settings, store, services, pipeline, dispatcher, verifier, streams, webhooks)


def stop_runtime(runtime: Runtime) -> None:
    """Let running events finish within the grace period; put the rest back in the queue."""
    runtime.streams.close()
    unfinished = runtime.dispatcher.stop(grace_s=runtime.settings.shutdown_grace_s)
    for event_id in unfinished:
        runtime.store.requeue(event_id)
    if unfinished:
        log.info("requeued running events at shutdown", extra={"count": len(unfinished)})
    runtime.webhooks.stop()
    runtime.services.close()
    runtime.store.close()
