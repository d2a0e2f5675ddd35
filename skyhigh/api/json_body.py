"""JSON request bodies parsed within limits, and off the event loop when they are large.

FastAPI parses a JSON body with `json.loads` on the event loop and validates every value of it:
31 MB of 2.5 M keys blocked the loop 1.6 s, and 300 k unexpected keys made 300 k validation
errors (4.8 s, a 31 MB answer). Routes built with `json_limits_route` get a request whose
`json()`:

* refuses a body over MAX_JSON_BODY_BYTES unless it can be an audio event: its bulk must be one
  base64 string, which holds no `"` or `,`, so counting those bytes (C speed) tells, before any
  parsing, whether a large body is audio or millions of keys (413);
* parses bodies over PARSE_IN_THREAD_BYTES in a worker thread;
* refuses a body of more than MAX_JSON_VALUES values (422), counted in the same thread, so
  validation and its errors stay small;
* refuses a large body whose `event_type` is not an audio type (413).

Usage::

    router = APIRouter(route_class=json_limits_route(large_body_types=AUDIO_TYPES))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import anyio
from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute

from skyhigh.config import IntakeSettings

# Below this, parsing takes well under a millisecond: a thread hop would cost more.
PARSE_IN_THREAD_BYTES = 64 * 1024
# `"` and `,` a large audio event may hold: keys, options, a full filter (16 lists of 100
# strings: ~5,000) and an initial_prompt; millions of keys are far past it.
LARGE_BODY_MAX_STRUCTURE = 16_384


class _TooManyValues(Exception):
    pass


def _count_values(value: Any, budget: int) -> int:
    """Values in a parsed JSON document, counting stops (raises) past `budget`."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > budget:
            raise _TooManyValues
        if isinstance(item, dict):
            stack.extend(item.values())
            count += len(item)  # the keys
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _parse(body: bytes, max_values: int) -> Any:
    value = json.loads(body)
    # Every value (and key) takes at least one byte of the body: a body no longer than the
    # budget cannot exceed it, so the usual small event skips the count.
    if len(body) > max_values:
        _count_values(value, max_values)
    return value


class LimitedJSONRequest(Request):
    """A Request whose `json()` applies the limits above (FastAPI awaits `request.json()`)."""

    large_body_types: Collection[str] = frozenset()

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await self._parse_limited()
        return self._json

    async def _parse_limited(self) -> Any:
        body = await self.body()
        limits: IntakeSettings = self.state.runtime.settings.intake
        large = len(body) > limits.max_json_body_bytes
        if large and body.count(b'"') + body.count(b",") > LARGE_BODY_MAX_STRUCTURE:
            raise self._too_large(limits)
        try:
            if len(body) > PARSE_IN_THREAD_BYTES:
                value = await anyio.to_thread.run_sync(_parse, body, limits.max_json_values)
            else:
                value = _parse(body, limits.max_json_values)
        except _TooManyValues:
            # An HTTPException: FastAPI turns anything else raised while reading a body into 400.
            # The detail has the shape of a validation 422 (skyhigh.api.errors).
            error = {
                "type": "json_too_complex",
                "loc": ["body"],
                "msg": f"the body holds more than MAX_JSON_VALUES ({limits.max_json_values}) "
                "JSON values; send a smaller event",
            }
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[error]) from None
        if large and not (
            isinstance(value, dict) and value.get("event_type") in self.large_body_types
        ):
            raise self._too_large(limits)
        return value

    def _too_large(self, limits: IntakeSettings) -> HTTPException:
        kinds = ", ".join(sorted(self.large_body_types)) or "none"
        return HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"JSON body is larger than MAX_JSON_BODY_BYTES ({limits.max_json_body_bytes} "
            f"bytes); only events carrying base64 audio ({kinds}) may be larger, up to "
            "MAX_BODY_BYTES; use POST /events/upload for audio files",
        )


def json_limits_route(*, large_body_types: Collection[str]) -> type[APIRoute]:
    """An APIRoute class whose handlers see LimitedJSONRequest (FastAPI's documented hook)."""
    request_class = type(
        "LimitedJSONRequestFor",
        (LimitedJSONRequest,),
        {"large_body_types": frozenset(large_body_types)},
    )

    class LimitedJSONRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited_handler(request: Request) -> Response:
                return await handler(request_class(request.scope, request.receive))

            return limited_handler

    return LimitedJSONRoute
