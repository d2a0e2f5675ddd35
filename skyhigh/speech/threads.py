"""Threads and cores for model work: how many cores we may use, and where weights load."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def on_passing_thread(build: Callable[[], T]) -> T:
    """Run `build` on a thread that ends when it returns.

    Loading weights runs torch operations, which give the loading thread an OpenMP team; GNU
    OpenMP keeps a thread's team until the thread ends, and once a process has more OpenMP
    threads than cores it stops spin-waiting between parallel regions everywhere (libgomp's
    "throttled" spin count). A long-lived loading thread (the lifespan's) would so leave the
    worker thread that runs inference 25-30% slower than the main thread on an idle machine
    (bench/thread_probe.py); loaded here, the worker's team is the only one.
    """
    box: dict[str, T] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box["value"] = build()
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="skyhigh-model-load")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return box["value"]
