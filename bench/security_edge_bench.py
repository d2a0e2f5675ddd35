"""Security edge benchmark: /health latency while clients abuse the edge.

For each server configuration, a real `uvicorn main:app` (tiny.en, fresh data directory) is
started and /health is probed every 50 ms (one request at a time, its own connection pool)
during:

* idle: nothing else;
* headers: 10 clients each stream a 1 MiB request header in 1 KiB pieces (TCP_NODELAY, so
  the server reads many small pieces: httptools re-copies the growing header on each one),
  reconnecting whenever the server answers or closes;
* bodies: 6 clients send unauthenticated 30 MB JSON bodies (2.4 M keys) to POST /events/,
  one after another;
* held: 50 connections that send nothing and 50 that trickle a request head one byte a
  second, each reconnecting as soon as the server closes it (so the server always holds 100
  abusive connections, and its limits show as closes, not as fewer abusers).

Configurations (--configs):

* before: the code before the security edge work (`git archive <--before-commit>` into a
  temporary directory), run as `uvicorn main:app` (httptools, no header limit);
* after-plain: this tree, plain `uvicorn main:app` (the app's header check only);
* after: this tree, `uvicorn main:app --http skyhigh.api.http_server:HttpProtocol` (the
  documented command);
* before-protocol: `--before-commit` run with that protocol (for the connection limits,
  whose "before" already had the header cap).

`--phases` picks phases (default headers,bodies; idle always runs first).

Reported per configuration and phase: /health p50/p99/max in ms, probes that failed, the
server's peak RSS during the phase, and the abusers' answers (status counts).

    uv run python -m bench.security_edge_bench --out bench/results/security_edge.json
    uv run python -m bench.security_edge_bench --configs before-protocol,after \
        --phases held --seconds 45 --before-commit 6c0381a --out bench/results/held.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.server import HTTP_PROTOCOL, serve_command, wait_ready

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"


class Server:
    def __init__(self, root: Path, data: Path, *, protocol: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shutil.copytree(ROOT / "lancedb_data", data / "lancedb_data")
        env = {
            **os.environ,
            "API_TOKENS": TOKEN,
            "DATABASE_URL": f"sqlite:///{data / 'events.db'}",
            "SPOOL_DIR": str(data / "spool"),
            "LANCEDB_URI": str(data / "lancedb_data"),
            "WHISPER_MODEL": "tiny.en",
            "LOG_LEVEL": "WARNING",
        }
        # The "before" build is served without the head-capping protocol; "after" is the
        # documented command.
        command = serve_command(self.port, http=protocol, extra=["--no-access-log"])
        log_path = data / "server.log"
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(command, cwd=root, env=env, stdout=self.log, stderr=self.log)
        wait_ready(self.url, self.proc, log_path=log_path, timeout_s=300)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def probe(server: Server, seconds: float, abusers: list[threading.Thread]) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    peak_rss = server.rss_mb()
    for thread in abusers:
        thread.start()
    end = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                ok = client.get(f"{server.url}/health").status_code == 200
                latencies.append((time.perf_counter() - start) * 1000)
                failures += not ok
            except httpx.HTTPError:
                failures += 1
            peak_rss = max(peak_rss, server.rss_mb())
            time.sleep(0.05)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {
        "probes": len(latencies),
        "failed": failures,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1], 1),
        "peak_rss_mb": round(peak_rss),
    }


def header_abuser(server: Server, stop: threading.Event, answers: Counter[str]) -> None:
    piece = b"a" * 1024
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            answers["connect failed"] += 1
            continue
        with sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for index in range(1024):  # 1 MiB
                    if stop.is_set():
                        return
                    sock.sendall(piece)
                    if index % 16 == 0:
                        time.sleep(0.001)  # streamed, as a slow client would
                sock.sendall(b"\r\n\r\n")
            except OSError:
                pass  # refused mid-way: the answer, if any, is waiting
            try:
                answers[sock.recv(64)[9:12].decode() or "closed"] += 1
            except OSError:
                answers["reset"] += 1


def body_abuser(server: Server, stop: threading.Event, answers: Counter[str], body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            try:
                status = client.post(f"{server.url}/events/", content=body, headers=headers)
                answers[str(status.status_code)] += 1
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1


def idle_abuser(server: Server, stop: threading.Event, answers: Counter[str]) -> None:
    _hold(server, stop, answers, trickle=b"")


def trickle_abuser(server: Server, stop: threading.Event, answers: Counter[str]) -> None:
    _hold(
        server, stop, answers, trickle=b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
    )


def _hold(server: Server, stop: threading.Event, answers: Counter[str], *, trickle: bytes) -> None:
    """Hold a connection (sending `trickle` a byte a second); count who ended it."""
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        except OSError:
            answers["connect failed"] += 1
            time.sleep(0.1)
            continue
        with sock:
            sock.settimeout(1.0)
            sent = 0
            while not stop.is_set():
                try:
                    if sock.recv(4096) == b"":
                        answers["closed by server"] += 1
                        break
                    answers["answered"] += 1  # a 408 (the close follows)
                except TimeoutError:
                    pass
                except OSError:
                    answers["closed by server"] += 1
                    break
                if trickle and sent < len(trickle):
                    try:
                        sock.send(trickle[sent : sent + 1])
                        sent += 1
                    except OSError:
                        answers["closed by server"] += 1
                        break


PHASES: dict[str, tuple[tuple[int, Any], ...]] = {
    "headers": ((10, header_abuser),),
    "bodies": ((6, body_abuser),),
    "held": ((50, idle_abuser), (50, trickle_abuser)),
}


def run_config(
    name: str, root: Path, protocol: str | None, seconds: float, phases: list[str]
) -> dict[str, Any]:
    body = b'{"event_type":"query","event_data":{' + b'"k":1,' * (5 * 1024 * 1024) + b'"z":1}}'
    body = body[: 30 * 1000 * 1000 - 3] + b"1}}"  # about 30 MB, still JSON-shaped
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        server = Server(root, Path(tmp), protocol=protocol)
        result: dict[str, Any] = {"config": name, "load_before": os.getloadavg()}
        try:
            result["idle"] = probe(server, seconds / 3, [])
            for phase in phases:
                stop = threading.Event()
                answers: Counter[str] = Counter()
                args: tuple[Any, ...] = (server, stop, answers)
                if phase == "bodies":
                    args += (body,)
                threads = [
                    threading.Thread(target=target, args=args, daemon=True)
                    for count, target in PHASES[phase]
                    for _ in range(count)
                ]
                result[phase] = probe(server, seconds, threads)
                stop.set()
                for thread in threads:
                    thread.join(timeout=120)
                result[phase]["answers"] = dict(answers)
                time.sleep(2)  # let the server settle between phases
        finally:
            server.stop()
        result["load_after"] = os.getloadavg()
        return result


def checkout(commit: str, dest: Path) -> Path:
    """`git archive` of `commit` (no worktree: the repository is left as it is)."""
    archive = subprocess.run(
        ["git", "archive", commit], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="before,after-plain,after")
    parser.add_argument("--before-commit", default="b809deb")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--phases", default="headers,bodies")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="edge-before-") as before_dir:
        for name in args.configs.split(","):
            if name == "before":
                root, protocol = checkout(args.before_commit, Path(before_dir)), None
            elif name == "before-protocol":
                root, protocol = checkout(args.before_commit, Path(before_dir)), HTTP_PROTOCOL
            elif name == "after-plain":
                root, protocol = ROOT, None
            else:
                root, protocol = ROOT, HTTP_PROTOCOL
            result = run_config(name, root, protocol, args.seconds, args.phases.split(","))
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
