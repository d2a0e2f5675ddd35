"""Server-Sent Events for /events and /v1 alike: the response, keep-alives, disconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from fastapi.responses import StreamingResponse

# A comment line: keeps proxies from closing a quiet stream, and clients ignore it.
KEEPALIVE = ": keepalive\n\n"


def sse_response(
    body: AsyncIterator[str], *, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """A text/event-stream answer that no cache or proxy buffers."""
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={**(headers or {}), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse_event(data: str, *, event: str | None = None) -> str:
    """One event: an optional `event:` name line and a `data:` line."""
    return f"data: {data}\n\n" if event is None else f"event: {event}\ndata: {data}\n\n"


async def cancel_on_disconnect(
    receive: Callable[[], Awaitable[Mapping[str, Any]]], scope: anyio.CancelScope
) -> None:
    """Cancel `scope` once the client leaves (an HTTP request or a WebSocket).

    Run it in the task group that does the waiting: a quiet event then does not keep a dead
    connection open. Clients have nothing more to say; whatever they send is ignored.
    """
    try:
        while not str((await receive())["type"]).endswith(".disconnect"):
            pass
    except Exception:
        pass  # the connection is gone either way
    finally:
        scope.cancel()
