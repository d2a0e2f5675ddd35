"""Builds the SkyHigh app: settings, lifespan (store, models, workers), routes.

Serve it with `uvicorn main:app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from router import router
from skyhigh import __version__
from skyhigh.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from skyhigh.config import Settings, get_settings
from skyhigh.domain.payloads import EVENT_TYPES
from skyhigh.intake.batcher import IntakeBatcher
from skyhigh.observability.logs import configure_logging
from skyhigh.processing.runtime import start_runtime, stop_runtime

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
        intake = IntakeBatcher(runtime.store)
        intake.start()
        try:
            yield {"runtime": runtime, "intake": intake}
        finally:
            await intake.stop()
            await anyio.to_thread.run_sync(stop_runtime, runtime)

    app = FastAPI(title="SkyHigh", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes `input`, which could be megabytes of audio.
    assert isinstance(exc, RequestValidationError)
    errors = [
        {key: value for key, value in error.items() if key not in ("input", "ctx", "url")}
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus one component per event-type payload (event_data's oneOf)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for event_type in EVENT_TYPES.values():
            model_schema = event_type.payload.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(model_schema.pop("$defs", {}))
            components[event_type.payload.__name__] = model_schema
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
