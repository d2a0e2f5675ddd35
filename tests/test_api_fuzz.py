"""Property-based fuzzing of every HTTP operation in the app's own OpenAPI schema (schemathesis).

The safety net for restructuring the API: whatever the handlers look like inside, every
operation must answer generated valid and invalid input without a 5xx, with a documented
status code and content type, and a body that matches the documented schema; invalid input
must be rejected (4xx) and the bearer-protected routes must refuse requests without the token.
Websocket routes are not in the OpenAPI schema and are not fuzzed here (see test_streams.py).

Each operation is one test, named `test_api_fuzz[GET /events/]` etc. in failure reports; on
pytest 9 the node ids lack that suffix, so pick operations with -k (`-k metrics`). A failure
prints the failing checks and a curl command that reproduces it against a running server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

import main
from tests.support.settings import TOKENS, make_settings

# Fuzzing-phase examples per operation (hypothesis max_examples). The examples phase (the
# schema's own examples) and the coverage phase (boundary values, each constraint broken once,
# unexpected methods) add a bounded, deterministic set of cases on top.
MAX_EXAMPLES = 20

CONFIG: dict[str, Any] = {
    "seed": 20240611,  # for whatever schemathesis randomizes outside hypothesis
    # Requests go to the app in-process (ASGI); the host only fills the URL.
    "base-url": "http://testserver",
    "generation": {
        "mode": "all",  # valid input and invalid input (which must be answered with a 4xx)
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,  # the same cases on every run and machine: a failure reproduces
        "database": "none",  # and no .hypothesis/ replay of an earlier run changes this one
        # Always send the configured token (below) instead of generated Authorization headers:
        # otherwise about half the cases of every protected route stop at 401 and never reach
        # a handler. Refusal without a token is still checked (the ignored_auth check).
        "with-security-parameters": False,
    },
    # Generating a case can take over a second on 2 busy CI cores; that is not a failure.
    "suppress-health-check": ["too_slow"],
    # The scheme FastAPI names for skyhigh.api.dependencies.bearer_scheme; the public routes
    # (/status, /health, /ready, /metrics, /demo) declare no security and get no token.
    "auth": {"openapi": {"HTTPBearer": {"bearer": TOKENS[0]}}},
    "checks": {
        # Left out: for a request the schema allows, this expects a 2xx, but a 422 for such
        # input is by design here: `cursor` is an opaque token only the server issues, and
        # some rules are checked by the validators, not expressible in the schema (Whisper's
        # language codes, exactly one of audio_base64/audio_url, event_data by event_type).
        "positive_data_acceptance": {"enabled": False},
        # Left out: Starlette answers a method a path does not have with 405 and an `Allow`
        # listing only the first route that matches the path (GET /events/ and POST /events/
        # are two routes), not the whole path. Framework behaviour; clients never send OPTIONS.
        "allow_header_conformance": {"enabled": False},
    },
    "operations": [
        {
            "include-path": "/events/{event_id}/stream",
            # A stream ends only with its event's outcome; an event still being processed
            # would hold the case open, so one is cut after this long (what it sent so far is
            # still checked). schemathesis also cuts a stream after 20 events.
            "request-timeout": 5,
        },
    ],
}


Message = dict[str, Any]


class AppUnderTest:
    """An ASGI app that forwards to the `fuzz_app` fixture's app, whose lifespan runs once.

    schemathesis binds the app to the schema when it parametrizes (at collection), but the
    private app needs a temporary directory, which only a fixture should make. (Deferring
    the whole schema with schemathesis.pytest.from_fixture does not work: schemathesis 4.32.5
    sets `node._nodeid` there, which pytest 9 no longer has.)

    schemathesis starts a lifespan on a test's first request and its pytest plugin ends it
    after each test: the app's models, store and workers would load once per operation. So
    the first of those lifespans starts the app's own, on the same event loop (where the
    requests run too), and each one hands out that one's state; `closing` makes the next end
    of a lifespan end the app's as well (the fixture's teardown).
    """

    def __init__(self) -> None:
        self.target: FastAPI | None = None
        self.closing = False
        self._state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: asyncio.Queue[Message] | None = None
        self._running: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self.target is not None, "the test must request the fuzz_app fixture"
        if scope["type"] != "lifespan":
            await self.target(scope, receive, send)
            return
        await receive()  # lifespan.startup
        if self._running is None:
            message = await self._start(self.target)
            if message["type"] != "lifespan.startup.complete":
                await send(message)  # lifespan.startup.failed
                return
        scope["state"].update(self._state)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown: after every test
        if self.closing:
            await self._stop()
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self, app: FastAPI) -> Message:
        self._state = {}
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        self._running = asyncio.get_running_loop().create_task(
            app(scope, self._to_app.get, self._from_app.put)
        )
        await self._to_app.put({"type": "lifespan.startup"})
        return await self._from_app.get()

    async def _stop(self) -> None:
        if self._running is None or self._to_app is None or self._from_app is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        message = await self._from_app.get()
        await self._running
        self._running = None
        assert message["type"] == "lifespan.shutdown.complete", message


APP = AppUnderTest()
# The schema main.app documents (built at import; its lifespan never runs). The routes do not
# depend on settings; the fixture checks that the app under test documents the same schema.
schema = schemathesis.openapi.from_dict(
    main.app.openapi(), config=schemathesis.Config.from_dict(CONFIG)
)
schema.app = APP


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """A private app (own store, spool and copy of lancedb_data/), not the session `client`:
    fuzzing stores junk events and documents that no other test should see."""
    app = main.create_app(make_settings(tmp_path_factory.mktemp("fuzz")))
    assert app.openapi() == main.app.openapi(), "settings changed the schema; load it per app"
    APP.target = app
    yield app
    # The app's lifespan (started by the first test's first request) ends with one more
    # schemathesis lifespan, on the loop it runs on.
    APP.closing = True
    with asgi.get_client(APP):
        pass
    asgi.shutdown_lifespans()
    APP.target = None
    APP.closing = False


@schema.parametrize()
def test_api_fuzz(case: schemathesis.Case[Any], fuzz_app: FastAPI) -> None:
    # fuzz_app is requested for its effect (APP forwards to it). call_and_validate sends the
    # case and runs the configured checks; a failing check or an app exception fails the test.
    case.call_and_validate()
