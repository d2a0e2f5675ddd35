"""Live results: `WS /events/{event_id}/ws` and `GET /events/{event_id}/stream` (SSE).

Both send the same JSON messages (skyhigh.streams): first the event's current state (a
`status` message shaped like `GET /events/{id}`), then `status`, `segment`, `transcript` and
`matches` messages as they happen, and the stream ends after the terminal `status`
(completed or failed, with `result` or `error`).

Mounted by router.py without the router-wide bearer dependency: a browser cannot set headers
on a WebSocket, so that route authenticates itself (skyhigh.dependencies.websocket_auth).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, WebSocket, status
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from skyhigh.dependencies import StoreDep, StreamsDep, WebSocketAuthDep, require_token
from skyhigh.store import EventNotFound
from skyhigh.streams import Lagged, StreamMessage, open_feed

router = APIRouter()

WS_NOT_FOUND = 4404  # application close code (4000-4999): no such event
WS_POLICY_VIOLATION = 1008  # RFC 6455: authentication failed
WS_TRY_AGAIN_LATER = 1013  # RFC 6455: the subscriber fell behind; reconnect

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "`event: <type>` + `data: <json>` per message; ends after the outcome",
    },
    401: {"description": "Missing or invalid bearer token"},
    404: {"description": "No event with this id"},
}


@router.get(
    "/{event_id}/stream",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
    dependencies=[Depends(require_token)],
    summary="Follow an event live (Server-Sent Events)",
)
async def stream_event(event_id: str, store: StoreDep, streams: StreamsDep) -> StreamingResponse:
    """The current state, then every status change, segment and match, then the outcome."""
    stack = AsyncExitStack()
    try:
        feed = await stack.enter_async_context(open_feed(streams, store, event_id))
    except EventNotFound:
        await stack.aclose()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no event {event_id!r}") from None

    async def body() -> AsyncIterator[str]:
        async with stack:
            try:
                async for message in feed:
                    # A comment line keeps proxies from closing a quiet stream.
                    yield ": keepalive\n\n" if message is None else _sse(message)
            except Lagged as exc:
                error = {"type": "error", "code": "lagging", "message": str(exc)}
                yield f"event: error\ndata: {json.dumps(error)}\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(message: StreamMessage) -> str:
    return f"event: {message.type}\ndata: {message.data}\n\n"


@router.websocket("/{event_id}/ws", name="stream_event_ws")
async def stream_event_ws(
    websocket: WebSocket,
    event_id: str,
    auth: WebSocketAuthDep,
    store: StoreDep,
    streams: StreamsDep,
) -> None:
    """The same messages as the SSE stream, one JSON text frame each.

    Auth: `Authorization: Bearer <token>`, or from a browser the subprotocols
    `["bearer", "<token>"]` (the server selects "bearer"). A refused token is closed with 1008.
    """
    # Accept first, then close with a code: a refused handshake reaches a browser only as 1006.
    await websocket.accept(subprotocol=auth.subprotocol)
    if auth.error is not None:
        await websocket.close(WS_POLICY_VIOLATION, reason=auth.error)
        return
    try:
        async with open_feed(streams, store, event_id) as feed:
            outcome = await _pump(websocket, feed)
    except EventNotFound:
        outcome = (WS_NOT_FOUND, f"no event {event_id!r}")
    if outcome is not None and websocket.client_state.name == "CONNECTED":
        await websocket.close(outcome[0], reason=outcome[1])


async def _pump(
    websocket: WebSocket, feed: AsyncIterator[StreamMessage | None]
) -> tuple[int, str] | None:
    """Send the feed; the close code and reason, or None when the client left first."""
    outcome: tuple[int, str] | None = None
    async with anyio.create_task_group() as tg:
        # Watch for the client leaving, so a quiet event does not keep a dead socket open.
        tg.start_soon(_cancel_on_disconnect, websocket, tg.cancel_scope)
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


async def _cancel_on_disconnect(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say; anything they send is ignored
    except Exception:
        pass  # the socket is gone either way
    finally:
        scope.cancel()
