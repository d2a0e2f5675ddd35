"""Mounts the /events API behind the bearer dependency, plus the public probes and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

import endpoint
from skyhigh import __version__
from skyhigh.api.dependencies import InternalsDep, RuntimeDep, require_token
from skyhigh.api.openai_compat import PREFIX as OPENAI_PREFIX
from skyhigh.api.openai_compat.routes import router as openai_router
from skyhigh.api.realtime import router as realtime_router
from skyhigh.api.realtime import secrets_router as realtime_secrets_router
from skyhigh.api.submit_path import SubmitRoute
from skyhigh.processing.registry import EVENT_TYPES

router = APIRouter()
# Every route under these needs the bearer token: the edge middleware (skyhigh.api.middleware)
# verifies it once, before the body is read, and `require_token` (below) reads the outcome.
# Keep in step with the mounts here.
PROTECTED_PREFIXES = ("/events", "/knowledge", OPENAI_PREFIX)
router.include_router(
    endpoint.router, prefix="/events", tags=["events"], dependencies=[Depends(require_token)]
)
# POST /events/ with a small JSON body is answered in front of the router, the same way
# (skyhigh.api.submit_path); keep its path in step with the mount above.
SUBMIT_ROUTE = SubmitRoute("/events/", TypeAdapter(endpoint.EventSchema))
# Live streams read the outcome per route: a refused WebSocket is accepted, then closed with 1008.
router.include_router(endpoint.live_router, prefix="/events", tags=["events"])
router.include_router(
    endpoint.knowledge_router,
    prefix="/knowledge",
    tags=["knowledge"],
    dependencies=[Depends(require_token)],
)
# OpenAI-compatible audio API: same tokens; errors under this prefix in OpenAI's shape.
router.include_router(
    openai_router, prefix=OPENAI_PREFIX, tags=["openai"], dependencies=[Depends(require_token)]
)
# Realtime transcription: the socket reads its auth outcome itself (client secrets, 1008).
router.include_router(realtime_router, prefix=OPENAI_PREFIX, tags=["realtime"])
router.include_router(
    realtime_secrets_router,
    prefix=OPENAI_PREFIX,
    tags=["realtime"],
    dependencies=[Depends(require_token)],
)


@router.get("/status", tags=["service"], summary="Service status, version and models")
async def read_status(runtime: RuntimeDep, internals: InternalsDep) -> dict[str, Any]:
    """Public: what this server runs (no secrets), and in scale-out mode its live workers.

    Workers are shown by engine, model and how many events each runs; their ids (host:pid)
    and the running events' keys only to an `admin` token or METRICS_TOKEN."""
    settings = runtime.settings
    dispatcher: dict[str, Any] = {"kind": runtime.dispatcher.kind}
    if runtime.scale_out:
        workers = await anyio.to_thread.run_sync(runtime.live_workers)
        dispatcher["live_workers"] = workers if internals else [_counts(w) for w in workers]
    else:
        dispatcher["workers"] = settings.worker_concurrency
    dispatcher["pending"] = runtime.dispatcher.pending()
    services = runtime.services
    pool = None if services is None else services.transcribers
    return {
        "status": "online",
        "version": __version__,
        "event_types": list(EVENT_TYPES),
        "models": {
            # In scale-out mode the models live in the workers (see live_workers).
            "whisper": None
            if pool is None
            else {"engine": pool.engine, "name": pool.model_name, "sha256": pool.sha256},
            "embedding": None
            if services is None
            else {"name": settings.embedding_model, "dimension": services.embedder.dimension},
        },
        "dispatcher": dispatcher,
    }


def _counts(worker: dict[str, Any]) -> dict[str, Any]:
    running = worker.get("running")
    return {
        "engine": worker.get("engine"),
        "model": worker.get("model"),
        "running": len(running) if isinstance(running, list) else 0,
    }


@router.get("/health", tags=["service"], summary="Liveness probe")
async def read_health() -> dict[str, str]:
    """Answers as long as the process serves requests; touches nothing else."""
    return {"status": "ok"}


@router.get(
    "/ready",
    tags=["service"],
    summary="Readiness probe",
    responses={503: {"description": "The store or the broker is unreachable"}},
)
async def read_ready(runtime: RuntimeDep, response: Response) -> dict[str, Any]:
    """200 when the store (and in scale-out mode the broker) answers, else 503."""
    checks: dict[str, str] = {}
    if runtime.services is not None:
        checks["models"] = "ok"  # loaded before the server listens
    for name, ping in (("store", runtime.store.ping), ("broker", runtime.dispatcher.ping)):
        if name == "broker" and not runtime.scale_out:
            continue
        try:
            await anyio.to_thread.run_sync(ping)
            checks[name] = "ok"
        except Exception:
            checks[name] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ready" if ready else "not ready", "checks": checks}


@router.get(
    "/metrics",
    tags=["service"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}},
        401: {"description": "METRICS_TOKEN is set and was not sent as the bearer token"},
    },
)
async def read_metrics() -> Response:
    """Prometheus text format: events by type and outcome, queue depth, step durations.

    Public unless METRICS_TOKEN is set; then send it as `Authorization: Bearer <token>` (the
    edge middleware checks it: skyhigh.api.auth.check_metrics_token)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


DEMO_PAGE = Path(__file__).resolve().parent / "skyhigh" / "api" / "static" / "demo.html"
# The page talks to this server only (no CDN); 'self' covers its ws:// connection too.
DEMO_CSP = (
    "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; media-src blob:"
)


@router.get("/demo", tags=["service"], response_class=HTMLResponse, summary="Live demo page")
async def read_demo() -> HTMLResponse:
    """Public page (it asks for a token): record or upload audio, watch results arrive live."""
    html = await anyio.Path(DEMO_PAGE).read_text()
    return HTMLResponse(html, headers={"Content-Security-Policy": DEMO_CSP})
