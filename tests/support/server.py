"""The served app as a real process, started with the documented serve command.

`scripts/dev.sh serve` and README run `uvicorn main:app --http
skyhigh.api.http_server:HttpProtocol`: the protocol class caps request heads. Tests and
benchmarks start exactly that, so they exercise and measure what users run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.ports import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]
HTTP_PROTOCOL = "skyhigh.api.http_server:HttpProtocol"


def serve_command(
    port: int,
    *,
    host: str = HOST,
    app: str = "main:app",
    http: str | None = HTTP_PROTOCOL,
    extra: Sequence[str] = (),
) -> list[str]:
    """The documented serve command; `http=None` only for a measured before/after comparison."""
    command = [sys.executable, "-m", "uvicorn", app]
    if http is not None:
        command += ["--http", http]
    return [*command, "--host", host, "--port", str(port), *extra]


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    *,
    log_path: Path | None = None,
    timeout_s: float = 180.0,
    path: str = "/ready",
) -> float:
    """Poll `url + path` until it answers 200; the seconds that took. Fails if `proc` exits."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise AssertionError(f"server exited with {proc.returncode}: {tail}")
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url}{path} did not answer 200 within {timeout_s:.0f} s")


class ServerProcess:
    """`uvicorn main:app` with the documented protocol, in its own process group.

    `env` is added to this process's environment. A test may `kill()` it and `start()` it
    again: same port, same data.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        app: str = "main:app",
        http: str | None = HTTP_PROTOCOL,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.command = serve_command(self.port, app=app, http=http, extra=extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout_s: float = 180.0, ready_path: str = "/ready") -> float:
        """Start and wait until ready; the seconds from start to ready."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped as a group: no orphaned children
            )
        self.start_s = wait_ready(
            self.url, self.proc, log_path=self.log_path, timeout_s=timeout_s, path=ready_path
        )
        return self.start_s

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, grace_s: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
