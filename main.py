"""Builds the SkyHigh app: settings, lifespan (store, models, workers), routes.

Serve it with `uvicorn main:app --http skyhigh.api.http_server:HttpProtocol` (the protocol caps
request headers while they arrive; plain `uvicorn main:app` works too, see that module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from router import PROTECTED_PREFIXES, router
from skyhigh import __version__
from skyhigh.api.docs import install_docs
from skyhigh.api.errors import install_error_handlers
from skyhigh.api.middleware import (
    AuthenticateFirstMiddleware,
    BodyLimitMiddleware,
    HeaderLimitMiddleware,
    RequestIdMiddleware,
)
from skyhigh.config import Settings, get_settings
from skyhigh.intake.batcher import IntakeBatcher
from skyhigh.intake.permissions import KnowledgeGuard
from skyhigh.intake.service import Intake
from skyhigh.observability.logs import configure_logging
from skyhigh.processing.registry import EVENT_TYPES
from skyhigh.processing.runtime import Runtime, start_runtime, stop_runtime

DESCRIPTION = """
Speech and retrieval AI behind a durable event API. POST an event to `/events/`, get
`202 Accepted` at once, then read the result at `/events/{event_id}`.
Authorize with a bearer token (the **Authorize** button) to try the `/events` routes.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Models load here, once, off the event loop; the server listens only afterwards.
        runtime = await anyio.to_thread.run_sync(start_runtime, settings)
        batcher = IntakeBatcher(runtime.store)
        batcher.start()
        try:
            yield {"runtime": runtime, "intake": _intake(runtime, batcher)}
        finally:
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
    )
    app.include_router(router)
    install_docs(app)
    install_error_handlers(app, event_types=list(EVENT_TYPES))
    # The last added runs first: request id, head size, who is asking, and only then the body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthenticateFirstMiddleware, protected_prefixes=PROTECTED_PREFIXES)
    app.add_middleware(
        HeaderLimitMiddleware,
        max_bytes=settings.max_header_bytes,
        max_count=settings.max_header_count,
    )
    app.add_middleware(RequestIdMiddleware)
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
