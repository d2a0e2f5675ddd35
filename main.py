"""Builds the SkyHigh app: settings, lifespan (store, models, workers), routes.

Serve it with `uvicorn main:app --http skyhigh.api.http_server:HttpProtocol` (the protocol caps
request headers while they arrive; plain `uvicorn main:app` works too, see that module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from router import PROTECTED_PREFIXES, SUBMIT_ROUTE, router
from skyhigh import __version__
from skyhigh.api.docs import install_docs
from skyhigh.api.errors import install_error_handlers
from skyhigh.api.middleware import EdgeConfig, EdgeMiddleware, HeadLimits
from skyhigh.api.state import AppState
from skyhigh.api.submit_path import SubmitFastPath
from skyhigh.api.tokens import load_verifier
from skyhigh.config import Settings, get_settings
from skyhigh.intake.batcher import IntakeBatcher
from skyhigh.intake.permissions import KnowledgeGuard
from skyhigh.intake.service import Intake
from skyhigh.observability.logs import configure_logging
from skyhigh.processing.registry import EVENT_TYPES
from skyhigh.processing.runtime import Runtime, start_runtime, stop_runtime
from skyhigh.realtime.service import load_realtime

DESCRIPTION = """
Speech and retrieval AI behind a durable event API. POST an event to `/events/`, get
`202 Accepted` at once, then read the result at `/events/{event_id}`.
Authorize with a bearer token (the **Authorize** button) to try the `/events` routes.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[AppState]:
        # Refuses to start unprotected (ValueError) before anything is opened or loaded.
        verifier = load_verifier(settings.auth)
        # Models load here, once, off the event loop; the server listens only afterwards.
        runtime = await anyio.to_thread.run_sync(start_runtime, settings)
        batcher = IntakeBatcher(runtime.store)
        batcher.start()
        realtime = await anyio.to_thread.run_sync(load_realtime, settings)
        try:
            intake = _intake(runtime, batcher)
            await realtime.recover(intake)  # sessions a crash left spooled become events
            yield AppState(runtime=runtime, intake=intake, verifier=verifier, realtime=realtime)
        finally:
            realtime.close()
            await batcher.stop()
            await anyio.to_thread.run_sync(stop_runtime, runtime)

    # docs_url/redoc_url None: FastAPI's pages load their assets from a CDN; ours are local.
    app = FastAPI(
        title="SkyHigh",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # SkyHigh exports Prometheus metrics (/metrics). FastAPI's native OpenTelemetry asks the
        # global providers on every request whether to trace (16 us of a POST's ~170 us on the
        # event loop, measured); with no provider configured that question is always "no".
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(router)
    install_docs(app)
    install_error_handlers(app, event_types=list(EVENT_TYPES))
    # Inside the edge: POST /events/ answered without the router (skyhigh.api.submit_path).
    app.add_middleware(SubmitFastPath, route=SUBMIT_ROUTE)
    # One layer: request id, head size, who is asking, and only then the body.
    edge = EdgeConfig(
        head=HeadLimits(settings.max_header_bytes, settings.max_header_count),
        max_body_bytes=settings.max_body_bytes,
        protected=PROTECTED_PREFIXES,
        metrics_token=settings.metrics_token,
    )
    app.add_middleware(EdgeMiddleware, config=edge)
    return app


def _intake(runtime: Runtime, batcher: IntakeBatcher) -> Intake:
    settings = runtime.settings
    return Intake(
        runtime.store,
        batcher,
        runtime.dispatcher,
        runtime.publisher,
        runtime.webhooks,
        settings.intake,
        spool_dir=settings.spool_dir,
        knowledge=KnowledgeGuard(runtime.knowledge, settings.knowledge),
        quotas=runtime.quotas,
    )


app = create_app()
