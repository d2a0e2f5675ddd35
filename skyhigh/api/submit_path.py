"""POST /events/ on a lean path: the hot route answered without FastAPI's routing machinery.

Profiled under load, a submission spent about half its event-loop time in Starlette/FastAPI
(routing, the exception and exit-stack layers, request objects, dependency solving, the body
validation call) and uvicorn, against a seventh in intake itself. This layer sits inside the
edge middleware (which has already given the request its id, checked the head and
authenticated it) and answers the common case itself: a small `application/json` body that
validates. It does what the FastAPI route does, in the same order: validate the body, count the
request against the principal's rate, `Intake.accept`, 202 with `Location` and `Accepted`.

Everything else falls through to the FastAPI route with the body replayed, unchanged: another
content type, a body past any JSON limit (skyhigh.api.json_body), one that does not parse or
validate, a request without a principal. Those answers (400, 401, 413, 422) therefore come from
the one place that already makes them, and the route stays in the OpenAPI document. Domain
errors raised once intake has begun (403, 409, 422, 429, 503) get the app's answers from
skyhigh.api.errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skyhigh.api.auth import authentication_of
from skyhigh.api.errors import ANSWERS, render
from skyhigh.api.json_body import PARSE_IN_THREAD_BYTES
from skyhigh.api.state import AppState
from skyhigh.domain.events import EventStatus
from skyhigh.intake.service import Submission

JSON_CONTENT_TYPE = b"application/json"
_DOMAIN_ERRORS = tuple(ANSWERS)


class Accepted(BaseModel):
    # The 202 body of every creating route (no docstring: it would enter the OpenAPI schema).

    message: str = "Data received!"
    event_id: str
    status: EventStatus
    status_url: str


@dataclass(frozen=True)
class SubmitRoute:
    """The route this layer answers and how its body validates (the route's own schema)."""

    path: str  # e.g. "/events/"
    schema: TypeAdapter[Any]  # validates to a model with event_id, event_type, event_data


class SubmitFastPath:
    """Answers `POST <route.path>` with a small JSON body; passes everything else on."""

    def __init__(self, app: ASGIApp, *, route: SubmitRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self.route.path
            or scope["method"] != "POST"
            or not _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its body
        event = self._validated(scope, body)
        if event is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await self._submit(scope, event, send)

    def _validated(self, scope: Scope, body: bytes) -> Any | None:
        """The validated event, or None when the FastAPI route must answer this body."""
        state: AppState | None = scope.get("state")
        if state is None or "intake" not in state:
            return None  # no lifespan ran
        limits = state["runtime"].settings.intake
        if len(body) > min(limits.max_json_values, limits.max_json_body_bytes):
            return None  # json_body's limits apply (value count, size, threads)
        if len(body) > PARSE_IN_THREAD_BYTES:
            return None
        outcome = authentication_of(scope)
        if outcome is None or outcome.principal is None:
            return None  # the route answers 401
        try:
            return self.route.schema.validate_json(body)
        except ValidationError:
            return None  # the route parses again and answers 400 or 422 in its shape

    async def _submit(self, scope: Scope, event: Any, send: Send) -> None:
        state: AppState = scope["state"]
        outcome = authentication_of(scope)
        assert outcome is not None and outcome.principal is not None  # checked in _validated
        principal = outcome.principal
        try:
            await state["runtime"].quotas.check_request(principal.owner)
            submission = Submission(principal, event.event_id, event.event_type, event.event_data)
            record = await state["intake"].accept(submission)
        except _DOMAIN_ERRORS as exc:
            answer = next(ANSWERS[kind] for kind in type(exc).__mro__ if kind in ANSWERS)
            await render(answer(exc), openai=False)(scope, _no_body, send)
            return
        except HTTPException as exc:
            error = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
            await error(scope, _no_body, send)
            return
        status_url = f"/events/{record.event_id}"
        accepted = Accepted(event_id=record.event_id, status=record.status, status_url=status_url)
        content = accepted.model_dump_json().encode()
        headers = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", JSON_CONTENT_TYPE),
            (b"location", status_url.encode()),
        ]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.lower() == JSON_CONTENT_TYPE)
    return False


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route behind: the body already read, then the connection's own."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
