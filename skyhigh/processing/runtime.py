"""What one API process runs, in either mode, and what one worker process runs.

- Embedded (QUEUE_URL unset, the default): the API process also loads the models and works
  events off on a pool of threads (InProcessDispatcher), which yield to bursts of submissions
  (skyhigh.processing.burst_gate); live messages go through the in-process bus. One command,
  nothing else to install.
- Scale-out (QUEUE_URL=redis://...): the API only authenticates, validates, stores and
  enqueues (CeleryDispatcher); it loads no models. Worker processes (`python -m
  skyhigh.worker`, see skyhigh.worker) run the same Pipeline with leases and publish live
  messages to Redis Streams, which the API's WS/SSE routes read.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from skyhigh.config import Settings
from skyhigh.intake.quotas import Counters, InProcessCounters, Quotas, RedisCounters
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.storage import open_knowledge_base
from skyhigh.live.publish import EventPublisher, FanOut
from skyhigh.live.redis_streams import RedisPublisher, RedisStreamBroker
from skyhigh.live.streams import StreamBroker, StreamBus
from skyhigh.processing.burst_gate import BurstGate
from skyhigh.processing.dispatch import Dispatcher, InProcessDispatcher
from skyhigh.processing.leases import LeaseKeeper, new_owner
from skyhigh.processing.pipeline import Pipeline
from skyhigh.processing.services import Services, load_services
from skyhigh.store.events import EventStore
from skyhigh.webhooks.sender import Webhooks

log = logging.getLogger("skyhigh.processing.runtime")

WORKER_KEY_PREFIX = "skyhigh:workers:"
WORKER_HEARTBEAT_S = 10.0
GC_GEN0_THRESHOLD = 5000  # allocations net of frees between collections of the youngest objects


@dataclass(kw_only=True)
class Runtime:
    """An API process: what the routes and the intake service use (the web layer adds the
    token verifier itself: skyhigh.api.state)."""

    settings: Settings
    store: EventStore
    knowledge: KnowledgeBase
    services: Services | None  # loaded models; None in scale-out mode (workers have them)
    dispatcher: Dispatcher
    streams: StreamBroker  # live WS/SSE subscribers
    publisher: EventPublisher  # where intake announces `queued`
    webhooks: Webhooks
    quotas: Quotas  # per-principal limits: in this process, or in Redis with QUEUE_URL
    leases: LeaseKeeper | None = None
    redis: redis.Redis | None = None

    @property
    def scale_out(self) -> bool:
        return self.settings.queue_url is not None

    def live_workers(self) -> list[dict[str, Any]]:
        """Workers that sent a heartbeat within the last three intervals (scale-out)."""
        if self.redis is None:
            return []
        workers = []
        for key in self.redis.scan_iter(match=WORKER_KEY_PREFIX + "*", count=100):
            raw = self.redis.get(key)
            if raw is not None:
                workers.append(json.loads(raw))
        return sorted(workers, key=lambda worker: str(worker.get("id")))


def open_quotas(counters: Counters, settings: Settings) -> Quotas:
    # Audio of unknown length reserves MAX_AUDIO_SECONDS; the intake probe has FFMPEG's limit.
    return Quotas(
        counters,
        settings.intake,
        max_audio_s=settings.max_audio_seconds,
        probe_timeout_s=settings.ffmpeg_timeout_s,
        decoder=settings.audio_decoder,
    )


def open_store(settings: Settings) -> EventStore:
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    return EventStore(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)


def open_knowledge(settings: Settings) -> KnowledgeBase:
    return open_knowledge_base(settings.knowledge)


def start_runtime(settings: Settings) -> Runtime:
    """Open the store, then either load the models and start the in-process workers, or
    connect to the broker. Blocking: the lifespan runs it in a thread before serving."""
    store = open_store(settings)
    webhooks = Webhooks(settings.webhooks, store)  # checks the webhook settings before models load
    if settings.queue_url is not None:
        runtime = _start_api_only(settings, store, webhooks)
    else:
        runtime = _start_embedded(settings, store, webhooks)
    webhooks.start()
    # Everything loaded so far (model weights, libraries) lives as long as the process: move
    # it out of the collector's sight. Measured on intake: the collector walking the models'
    # heap made the p99 tail (310 ms vs 23 ms with collection off); freezing before the models
    # loaded only halved it.
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred container objects that die young: at the default
    # threshold (700) the youngest generation was collected ~140 times a second under load,
    # 0.2 ms each (with the older generations, ~4 % of the event loop's time); at 5000 it is
    # collected every second or two, ~5 ms each (BENCHMARKS.md "Intake").
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    return runtime


def _start_embedded(settings: Settings, store: EventStore, webhooks: Webhooks) -> Runtime:
    services = load_services(settings)
    streams = StreamBus()
    leases = LeaseKeeper(store, owner=new_owner(), lease_s=settings.event_lease_s)
    # The bus first: live subscribers see the outcome before webhook bookkeeping runs.
    publisher = FanOut([streams, webhooks])
    quotas = open_quotas(InProcessCounters(), settings)
    pipeline = Pipeline(
        store, services, leases=leases, publisher=publisher, on_audio=quotas.charge_audio_sync
    )
    dispatcher = InProcessDispatcher(
        pipeline.process,
        concurrency=settings.worker_concurrency,
        max_pending=settings.max_pending_events,
        gate=BurstGate(rate=settings.worker_yield_rate, max_wait_s=settings.worker_yield_max_s),
    )
    leases.start()
    # This process is the store's only worker: whatever a crash left processing is ours.
    dispatcher.start(store.recover())
    return Runtime(
        settings=settings,
        store=store,
        knowledge=services.knowledge,
        services=services,
        dispatcher=dispatcher,
        streams=streams,
        publisher=publisher,
        webhooks=webhooks,
        quotas=quotas,
        leases=leases,
    )


def _start_api_only(settings: Settings, store: EventStore, webhooks: Webhooks) -> Runtime:
    from skyhigh.processing.celery_app import make_celery
    from skyhigh.processing.celery_dispatch import CeleryDispatcher

    assert settings.queue_url is not None
    dispatcher = CeleryDispatcher(
        make_celery(settings.processing),
        store,
        settings.processing,
        max_pending=settings.max_pending_events,
    )
    dispatcher.start([])
    return Runtime(
        settings=settings,
        store=store,
        knowledge=open_knowledge(settings),
        services=None,
        dispatcher=dispatcher,
        streams=RedisStreamBroker(settings.queue_url),
        # Subscribers start from the store's state, so `queued` needs no live message here;
        # webhooks only act on outcomes, which workers publish.
        publisher=FanOut(),
        webhooks=webhooks,
        quotas=Quotas(RedisCounters(settings.queue_url), settings.intake),
        redis=redis.Redis.from_url(settings.queue_url),
    )


def stop_runtime(runtime: Runtime) -> None:
    """Let running events finish within the grace period; put the rest back in the queue."""
    if isinstance(runtime.streams, StreamBus):
        runtime.streams.close()
    unfinished = runtime.dispatcher.stop(grace_s=runtime.settings.shutdown_grace_s)
    for key in unfinished:
        runtime.store.requeue(key)
    if unfinished:
        log.info("requeued running events at shutdown", extra={"count": len(unfinished)})
    if runtime.leases is not None:
        runtime.leases.stop()
    runtime.webhooks.stop()
    if runtime.services is not None:
        runtime.services.close()
    if runtime.redis is not None:
        runtime.redis.close()
    runtime.store.close()


# --------------------------------------------------------------------------- workers


@dataclass(kw_only=True)
class WorkerRuntime:
    """A worker process (skyhigh.worker): models, the pipeline with leases, a heartbeat."""

    settings: Settings
    store: EventStore
    services: Services
    pipeline: Pipeline
    leases: LeaseKeeper
    webhooks: Webhooks
    redis: redis.Redis
    _stopping: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> dict[str, Any]:
        pool = self.services.transcribers
        return {
            "id": self.leases.owner,
            "engine": pool.engine,
            "model": pool.model_name,
            "running": self.leases.held(),
        }


def start_worker_runtime(settings: Settings) -> WorkerRuntime:
    """Load the models once for this worker process and connect to store and Redis."""
    assert settings.queue_url is not None, "workers need QUEUE_URL"
    store = open_store(settings)
    webhooks = Webhooks(settings.webhooks, store)
    services = load_services(settings)
    client = redis.Redis.from_url(settings.queue_url)
    live = RedisPublisher(
        client, maxlen=settings.live_stream_maxlen, ttl_s=settings.live_stream_ttl_s
    )
    leases = LeaseKeeper(store, owner=new_owner(), lease_s=settings.event_lease_s)
    quotas = open_quotas(RedisCounters(settings.queue_url), settings)
    pipeline = Pipeline(
        store,
        services,
        leases=leases,
        publisher=FanOut([live, webhooks]),
        on_audio=quotas.charge_audio_sync,
    )
    leases.start()
    webhooks.start()  # deliveries are leased too: any process may send them
    runtime = WorkerRuntime(
        settings=settings,
        store=store,
        services=services,
        pipeline=pipeline,
        leases=leases,
        webhooks=webhooks,
        redis=client,
    )
    threading.Thread(
        target=_heartbeat, args=(runtime,), name="skyhigh-heartbeat", daemon=True
    ).start()
    return runtime


def _heartbeat(runtime: WorkerRuntime) -> None:
    key = WORKER_KEY_PREFIX + runtime.leases.owner
    while True:
        try:
            runtime.redis.set(key, json.dumps(runtime.describe()), ex=int(WORKER_HEARTBEAT_S * 3))
        except redis.RedisError:
            log.warning("worker heartbeat failed")
        if runtime._stopping.wait(WORKER_HEARTBEAT_S):
            break
    try:
        runtime.redis.delete(key)
    except redis.RedisError:
        pass


def stop_worker_runtime(runtime: WorkerRuntime) -> None:
    """Give back what this worker still holds, so another takes it at once."""
    runtime._stopping.set()
    for key in runtime.leases.held():
        runtime.store.requeue(key, owner=runtime.leases.owner)
    runtime.leases.stop()
    runtime.webhooks.stop()
    runtime.services.close()
    runtime.store.close()
