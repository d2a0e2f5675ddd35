"""Threads and cores for model work: how many cores we may use, and where weights load."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

# GNU OpenMP (torch's and CTranslate2's) waits between parallel regions by spinning, except once
# the process has more OpenMP threads than cores ("throttled"): then 100 spins, and a decoder's
# many small regions each pay a futex wake. One idle CTranslate2 model that has decoded keeps its
# team, so a second model in the process (a realtime model, WHISPER_INSTANCES>1, a test's) was
# enough: 30-60 % slower on 2 cores (BENCHMARKS.md, "Two models in one process"). ACTIVE makes
# the throttled wait 1,000 spins; GOMP_SPINCOUNT keeps the unthrottled one at libgomp's default
# (300,000, about 3 ms) instead of ACTIVE's 5 minutes, so idle threads still sleep.
OPENMP_WAIT: Final = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def keep_openmp_spinning() -> None:
    """Set OPENMP_WAIT unless the operator set either variable. libgomp reads them once, when
    torch or CTranslate2 first loads it: call before either is imported."""
    if not any(name in os.environ for name in OPENMP_WAIT):
        os.environ.update(OPENMP_WAIT)


def on_passing_thread(build: Callable[[], T]) -> T:
    """Run `build` on a thread that ends when it returns.

    Loading weights runs torch operations, which give the loading thread an OpenMP team; GNU
    OpenMP keeps a thread's team until the thread ends, and once a process has more OpenMP
    threads than cores it stops spin-waiting between parallel regions everywhere (libgomp's
    "throttled" spin count). A long-lived loading thread (the lifespan's) would so leave the
    worker thread that runs inference 25-30% slower than the main thread on an idle machine
    (bench/thread_probe.py); loaded here, the worker's team is the only one. Where a second
    team cannot be avoided (a second model that has decoded), OPENMP_WAIT softens the throttling.
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
