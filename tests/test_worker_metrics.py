"""A Celery worker process serves its Prometheus metrics on WORKER_METRICS_PORT."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

# Run in a child: importing skyhigh.worker builds the Celery app from the settings (QUEUE_URL
# must be set; nothing connects to it here) and registers the metrics in its default registry.
SCRIPT = textwrap.dedent(
    """
    import socket, sys, urllib.request
    from skyhigh.observability.metrics import EVENTS_COMPLETED
    from skyhigh.worker import start_metrics_server

    assert start_metrics_server(0) is False
    port = int(sys.argv[1])
    assert start_metrics_server(port) is True
    EVENTS_COMPLETED.labels(event_type="speech").inc()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'skyhigh_events_completed_total{event_type="speech"} 1.0' in body, body[:2000]
    # A second server on the same port (a prefork sibling) is refused, not fatal.
    assert start_metrics_server(port) is False
    print("ok")
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_worker_process_serves_its_metrics_on_the_configured_port() -> None:
    env = {**os.environ, "QUEUE_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(_free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
