"""`python -m skyhigh.worker`: one Celery worker process running the same pipeline as the API.

    python -m skyhigh.worker                         # both queues, solo pool
    python -m skyhigh.worker -Q events -c 1          # options pass through to `celery worker`
    celery -A skyhigh.worker worker --pool=solo -Q events,knowledge   # the same, by hand

The default pool is `solo`: the event runs on the process's main thread, where PyTorch's
OpenMP threads are fastest (measured: the same Whisper call is 25-45% slower from a worker
thread), and scaling is by processes (one per core group, any number of hosts). Models load
once per process: at worker start for solo/threads pools, in each child for prefork (whose
start-up timeout is raised for that, see skyhigh.processing.celery_app). Knowledge writes go to
the `knowledge` queue; run exactly one worker process consuming it (`-Q knowledge -c 1`, or the
default, which consumes both, when you run one worker) so each LanceDB table has one writer.
WORKER_METRICS_PORT (0 = off) serves the process's Prometheus metrics over HTTP.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from celery import Task, signals
from prometheus_client import start_http_server

from skyhigh.config import get_settings
from skyhigh.observability.logs import configure_logging
from skyhigh.processing.celery_app import (
    EVENTS_QUEUE,
    KNOWLEDGE_QUEUE,
    PROCESS_EVENT,
    PROCESS_EVENTS,
    make_celery,
    queue_peers,
)
from skyhigh.processing.celery_dispatch import send_messages, worker_share
from skyhigh.processing.runtime import WorkerRuntime, start_worker_runtime, stop_worker_runtime

log = logging.getLogger("skyhigh.worker")

settings = get_settings()
app = make_celery(settings.processing)

_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def worker_runtime() -> WorkerRuntime:
    """This process's runtime, loaded on first use if the start-up signal did not load it."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            configure_logging(settings.log_level)
            _runtime = start_worker_runtime(settings)
            start_metrics_server(settings.worker_metrics_port)
            log.info("worker ready", extra={"owner": _runtime.leases.owner})
        return _runtime


def start_metrics_server(port: int) -> bool:
    """Serve this process's Prometheus metrics on `port` (0: off); False when the port is taken.

    A taken port is logged, not fatal: a worker that cannot publish metrics still does its work
    (a prefork pool's children, for one, all share the configured port; the first one wins).
    """
    if port == 0:
        return False
    try:
        start_http_server(port)
    except OSError as error:
        log.warning("worker metrics port %d unavailable: %s", port, error)
        return False
    log.info("worker metrics on port %d", port)
    return True


@app.task(name=PROCESS_EVENT, ignore_result=True)
def process_event(key: str) -> None:
    """Run the next event in fair order among those of `key`'s queue (nothing when none waits)."""
    worker_runtime().pipeline.process_next(key, peers=queue_peers)


@app.task(name=PROCESS_EVENTS, ignore_result=True, bind=True)
def process_events(task: Task, keys: list[str]) -> None:
    """One fair claim per key, as in `process_event`, each event claimed by its lease.

    An API sends one message per queue for all the keys of a send round; the worker that takes
    it first forwards all but its own KEYS_PER_WORKER keys to the same queue, in messages of
    that size, so idle workers share the round (skyhigh.processing.celery_dispatch). One event
    that raises does not keep the rest from running; the message is acknowledged after all of
    them (acks late), so a worker lost midway gives the whole message back (forwarding it again
    sends only duplicate hints), and the events already finished are no-ops for the next worker.
    """
    keys, forwards = worker_share(keys)
    if forwards:
        _forward(forwards, (task.request.delivery_info or {}).get("routing_key") or EVENTS_QUEUE)
    pipeline = worker_runtime().pipeline
    for key in keys:
        try:
            pipeline.process_next(key, peers=queue_peers)
        except Exception:
            log.exception("event failed in a batch", extra={"event_id": key})


def _forward(forwards: list[list[str]], queue: str) -> None:
    count = sum(len(share) for share in forwards)
    try:
        send_messages(app, [(queue, share) for share in forwards])
    except Exception:
        # This worker still runs its own keys; the sweeper re-sends hints for the others.
        log.warning("forwarding hints failed; the sweeper will resend", extra={"count": count})
        return
    log.info("forwarded hints", extra={"queue": queue, "count": count})


@signals.worker_init.connect
def _load_in_main_process(sender: Any = None, **_: Any) -> None:
    # solo and threads pools run tasks in this process; prefork children load their own.
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "")
    if "prefork" not in str(pool):
        worker_runtime()


@signals.worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    worker_runtime()


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _stop(**_: Any) -> None:
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            stop_worker_runtime(_runtime)
            _runtime = None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    defaults = {
        "--pool": "solo",
        "--queues": f"{EVENTS_QUEUE},{KNOWLEDGE_QUEUE}",
        "--loglevel": "INFO",
        # Celery's default, celery@<host>, is the same for every worker on one host, and
        # workers that share a name answer remote control (ping, inspect) as one.
        "--hostname": f"skyhigh-{os.getpid()}@%h",
    }
    short = {"--pool": "-P", "--queues": "-Q", "--loglevel": "-l", "--hostname": "-n"}
    for option, value in defaults.items():
        given = any(
            arg == option or arg.startswith(option + "=") or arg == short[option] for arg in args
        )
        if not given:
            args.append(f"{option}={value}")
    app.worker_main(["worker", *args])


if __name__ == "__main__":
    main()
