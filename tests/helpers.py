"""Test helpers: settings for a test app, a real server process, polling, sample audio."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from skyhigh.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TOKENS = ("token-alpha-0123456789", "token-bravo-9876543210")
AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}
TERMINAL = {"completed", "failed"}


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test app: temporary store and spool, a private copy of the shipped
    knowledge base, and the small bundled tiny.en weights (tests not about the default model)."""
    values: dict[str, Any] = {
        "api_tokens": ",".join(TOKENS),
        "database_url": f"sqlite:///{tmp / 'events.db'}",
        "spool_dir": tmp / "spool",
        "lancedb_uri": str(copy_knowledge(tmp)),
        "whisper_model": "tiny.en",
        "whisper_engine": "openai-whisper",
        "model_cache_dir": model_cache_dir(),
        "log_level": "INFO",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def copy_knowledge(tmp: Path) -> Path:
    """Tests may write to the knowledge base; the committed lancedb_data/ stays untouched."""
    dest = tmp / "lancedb_data"
    if not dest.exists():
        shutil.copytree(ROOT / "lancedb_data", dest)
    return dest


def model_cache_dir() -> Path:
    # Converted checkpoints are cached across runs (keyed by checksum), like in production.
    return Path(os.environ.get("SKYHIGH_TEST_MODEL_CACHE", Path.home() / ".cache" / "skyhigh"))


@contextmanager
def without_auth(client: TestClient) -> Iterator[TestClient]:
    """The same running app, with the session client's default Authorization header removed."""
    saved = client.headers.pop("Authorization")
    try:
        yield client
    finally:
        client.headers["Authorization"] = saved


def wait_terminal(
    get: Callable[[str], httpx.Response], event_id: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = get(f"/events/{event_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        if record["status"] in TERMINAL:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"event {event_id} still {record['status']} after {timeout_s}s")
        time.sleep(0.05)


def jfk_base64() -> str:
    return base64.b64encode((DATA / "jfk.wav").read_bytes()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A real `uvicorn main:app` subprocess, for behaviour that lives in a real server."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 180.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "main:app",
                # The documented run command: the protocol that caps request heads.
                "--http",
                "skyhigh.api.http_server:HttpProtocol",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        "API_TOKENS": ",".join(TOKENS),
        "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
        "SPOOL_DIR": str(tmp / "spool"),
        "LANCEDB_URI": str(copy_knowledge(tmp)),
        "WHISPER_MODEL": "tiny.en",
        "MODEL_CACHE_DIR": str(model_cache_dir()),
    }
    env.update(overrides)
    return env
