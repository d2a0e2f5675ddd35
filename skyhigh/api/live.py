"""Live results over SSE and WebSocket, for /events and /v1 alike.

The SSE response (no buffering), keep-alives, the event lines, watching for the client to
leave, and sending a feed over a WebSocket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from fastapi import WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from skyhigh.live.streams import Lagged, StreamMessage

WS_TRY_AGAIN_LATER = 1013  # RFC 6455: the subscriber fell behind; reconnect

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


async def pump_websocket(
    websocket: WebSocket, feed: AsyncIterator[StreamMessage | None]
) -> tuple[int, str] | None:
    """Send the feed; the close code and reason, or None when the client left first."""
    outcome: tuple[int, str] | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_on_disconnect, websocket.receive, tg.cancel_scope)
        try:
            async for message in feed:
                if message is not None:
                    await websocket.send_text(message.data)
            outcome = (1000, "done")
        except Lagged:
            outcome = (WS_TRY_AGAIN_LATER, "subscriber fell behind; reconnect for the full state")
        except (WebSocketDisconnect, OSError):
            outcome = None
        tg.cancel_scope.cancel()
    return outcome
