"""Shared fixtures: one app (with real models) per test session, real servers, real services.

Tiers: `pytest -m "not slow"` is the fast tier (in-process app, tiny.en, no browser, Redis or
Postgres); the full suite adds `slow` tests, which start server processes, fleets, chromium,
Redis or Postgres, load the base model, or decode for more than about 15 s (forced fallback).
A tool a selected test needs must be installed: a missing one fails that test (never skips it).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import pytest
import torch
import whisper
from fastapi.testclient import TestClient

from main import create_app
from skyhigh.speech.weights import ResolvedModel, resolve_whisper_model
from skyhigh.store.events import EventStore
from tests.support.crash import Crash, crash
from tests.support.diarized import diarize_two_speakers
from tests.support.principals import jwt_server_env
from tests.support.receivers import WEBHOOK_SECRET, WebhookReceiver
from tests.support.server import ServerProcess
from tests.support.services import PostgresServer, RedisServer
from tests.support.settings import AUTH, METRICS_TOKEN, make_settings, server_env

# Every test needs these (audio decoding and the fixtures tests make).
BASE_TOOLS = ("ffmpeg", "ffprobe", "sox", "openssl")
# A test that uses one of these shared server fixtures is slow, whatever else it does.
SLOW_FIXTURES = {"live_server", "jwt_server", "postgres", "redis_server"}
# A fixture that starts a service needs its binaries.
FIXTURE_TOOLS = {
    "postgres": ("runuser",) if os.geteuid() == 0 else (),
    "redis_server": ("redis-server",),
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the mark must be there by then
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    seed_sampling()
    tools = list(BASE_TOOLS)
    for marker in item.iter_markers("needs"):
        tools += marker.args
    for fixture in getattr(item, "fixturenames", ()):
        tools += FIXTURE_TOOLS.get(fixture, ())
    missing = sorted({tool for tool in tools if shutil.which(tool) is None})
    if missing:
        pytest.fail(
            f"missing tools this test needs: {', '.join(missing)}; "
            "./scripts/dev.sh test installs them",
            pytrace=False,
        )


def seed_sampling(seed: int = 0) -> None:
    """Whisper's temperature fallback samples (torch on openai-whisper, CTranslate2 on
    faster-whisper): seeded before each test and the fixtures it sets up, a test decodes the
    same text with the same model calls in every run, alone or in the suite (unseeded, the
    looped-speech tests took 17-34 s: how many samples looped to the token limit varied)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    ctranslate2.set_random_seed(seed)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted-weights cache for the whole session: each conversion runs once."""
    return tmp_path_factory.getbasetemp() / "model-cache"


@pytest.fixture(scope="session")
def jfk() -> np.ndarray[Any, np.dtype[np.float32]]:
    """JFK's inaugural line (11 s), decoded once."""
    audio: np.ndarray[Any, np.dtype[np.float32]] = whisper.audio.load_audio(
        str(Path(__file__).parent / "data" / "jfk.wav")
    )
    return audio


@pytest.fixture(scope="session")
def tiny_openai(model_cache: Path) -> ResolvedModel:
    """tiny.en converted for openai-whisper, once per session."""
    return resolve_whisper_model("tiny.en", engine="openai-whisper", cache_dir=model_cache)


@pytest.fixture(scope="session")
def tiny_whisper_model(tiny_openai: ResolvedModel) -> Any:
    """One plain `whisper` model on the converted tiny.en, for tests that compare against
    whisper.transcribe itself (read-only: nothing may change it)."""
    assert tiny_openai.checkpoint is not None
    return whisper.load_model(str(tiny_openai.checkpoint), device="cpu")


@pytest.fixture(scope="session")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with its lifespan running: real store, real models, real worker threads."""
    settings = make_settings(
        tmp_path_factory.mktemp("app"),
        max_body_bytes=2 * 1024 * 1024,
        max_audio_bytes=1024 * 1024,
        max_audio_seconds=60,
        audio_url_allowed_hosts="127.0.0.1",
        audio_url_allow_private=True,
    )
    with TestClient(create_app(settings), headers=AUTH) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def diarized(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two-speaker conversation diarized once on the session app (tests/support/diarized.py):
    for the diarization result tests and the speaker index tests."""
    return diarize_two_speakers(client, tmp_path_factory.mktemp("diarized"))


# --- live results (tests/test_streams.py, test_webhooks.py, test_request_cli.py, test_demo.py)


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver
) -> Iterator[ServerProcess]:
    """One real server for the live-results tests (a model load is the slow part of a test).

    Every event's outcome also goes to the receiver's /global path (WEBHOOK_URL); retries are
    fast so retry tests stay short. Audio URLs may name any host, private ones too (the edge
    tests need it), and /metrics wants METRICS_TOKEN. Realtime sessions are on
    (tests/test_realtime.py, and the demo page's live captions), with small limits its tests
    reach: three sessions, two per principal, 64 KiB appends, 3 s idle (a session waiting for
    its last transcript gets it well within that; the idle test waits it out). A test may kill
    and restart it (same port, same database): test_server's crash tests do, on one worker
    (exactly one event is mid-work) with 0.5 s of grace at shutdown.
    """
    tmp = tmp_path_factory.mktemp("live")
    env = server_env(
        tmp,
        WEBHOOK_URL=f"{webhook_receiver.url}/global",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_BACKOFF_S="1",
        WEBHOOK_MAX_ATTEMPTS="3",
        WEBHOOK_TIMEOUT_S="5",
        AUDIO_URL_ALLOWED_HOSTS="*",
        AUDIO_URL_ALLOW_PRIVATE="true",
        METRICS_TOKEN=METRICS_TOKEN,
        WORKER_CONCURRENCY="1",
        SHUTDOWN_GRACE_S="0.5",
        REALTIME_ENABLED="true",
        REALTIME_MAX_SESSIONS="3",
        REALTIME_SESSIONS_PER_PRINCIPAL="2",
        REALTIME_MAX_APPEND_BYTES="65536",
        REALTIME_IDLE_TIMEOUT_S="3",
    )
    with ServerProcess(env, tmp / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def live_server_crash(live_server: ServerProcess, webhook_receiver: WebhookReceiver) -> Crash:
    """The live server killed (-9) once, mid-work and mid-delivery, and started again: one
    restart (a model load) for test_server's and test_webhooks' crash checks."""
    return crash(live_server, webhook_receiver)


@pytest.fixture(scope="session")
def jwt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server in JWT mode for the principal tests (test_security_limits, test_tenancy,
    test_transcript_privacy): its settings are the union they need (tests/support/principals.py),
    and each module signs its own subjects, so none sees another's events or quotas."""
    tmp = tmp_path_factory.mktemp("jwt")
    with ServerProcess(jwt_server_env(tmp), tmp / "server.log") as server:
        yield server


# --- real services for scale-out (tests/test_scale_out.py, tests/test_store.py)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """An empty event store on SQLite, and on a throwaway Postgres database (slow)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    store = EventStore(url)
    yield store
    store.close()
