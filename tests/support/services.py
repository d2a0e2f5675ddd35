"""Throwaway Redis and Postgres servers from the Debian packages, and an S3 API server
(moto, a pinned dev dependency), on free ports.

Real services, never mocks: `scripts/dev.sh test` installs `redis-server` and `postgresql`;
each fixture starts a private instance in a temporary directory and removes it afterwards.
Postgres refuses to run as root, so as root the cluster belongs to the `postgres` user the
Debian package creates. The S3 server is moto's standalone server in its own process: LanceDB
talks HTTP to it as to any S3-compatible store.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import redis

from tests.support.ports import free_port


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="skyhigh-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No persistence: a restart starts empty, as after losing the broker's data.
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.dir),
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A throwaway cluster; `durable=False` (tests) turns fsync off, `True` (benchmarks) keeps
    Postgres's durable defaults so a commit costs what it costs in production."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="skyhigh-pg-"))
        self.data = self.dir / "data"
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise AssertionError("postgresql is not installed (./scripts/dev.sh test installs it)")
        self.bin = Path(bins[-1])
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")

    def _run(self, *command: str) -> None:
        # No pipes: the server pg_ctl starts would inherit them and keep them open forever.
        subprocess.run(
            [*self.as_postgres, *command],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust",
            "--username", self.user, "--encoding=UTF8",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        log = str(self.dir / "server.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"
        )

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL (psycopg 3)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        conninfo = f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class S3Server:
    """moto's S3 API server (`python -m moto.server`) on loopback; buckets live in its memory.

    `settings()` are the AWS settings a client needs (as Settings field names), `env()` the
    same as environment variables for a server process.
    """

    region = "us-east-1"
    key_id = "skyhigh-test-key"
    secret = "skyhigh-test-secret"

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"moto.server exited with {self.proc.returncode}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("moto.server did not start")

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket; its name."""
        name = name or f"skyhigh-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10.0)
        response.raise_for_status()
        return name

    def keys(self, bucket: str) -> list[str]:
        """Object keys in `bucket` (the first 1,000)."""
        response = httpx.get(f"{self.endpoint}/{bucket}?list-type=2", timeout=10.0)
        response.raise_for_status()
        return [part.split("</Key>")[0] for part in response.text.split("<Key>")[1:]]

    def settings(self) -> dict[str, str | bool]:
        return {
            "aws_endpoint": self.endpoint,
            "aws_allow_http": True,
            "aws_region": self.region,
            "aws_access_key_id": self.key_id,
            "aws_secret_access_key": self.secret,
        }

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
