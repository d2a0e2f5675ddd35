"""Shared fixtures: one app (with real models) per test session, real servers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from helpers import AUTH, ServerProcess, make_settings, server_env
from live_helpers import WEBHOOK_SECRET, WebhookReceiver
from main import create_app
from services import PostgresServer, RedisServer

# Every test runs on every machine: a missing tool fails the run instead of skipping tests.
REQUIRED_TOOLS = (
    "ffmpeg", "ffprobe", "sox", "espeak-ng", "openssl", "chromium", "redis-server", "runuser",
)  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise pytest.UsageError(
            f"missing tools the tests need: {', '.join(missing)}; "
            "./scripts/dev.sh test installs them"
        )


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
    fast so retry tests stay short. A test may kill and restart it (same port, same database).
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
    )
    server = ServerProcess(env, tmp / "server.log")
    server.start()
    yield server
    server.stop()


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
