"""The embedded worker yields to a burst of submissions: intake first, the backlog after.

In embedded mode the worker threads share the API's interpreter lock with the event loop. Under
a flood of submissions, each time a worker thread (or a library thread it woke: ONNX, LanceDB,
SQLite) takes the lock back, the loop waits for it, and the loop is what answers requests:
measured under wrk, the worker cost the request path a third of its throughput while it finished
~17 events a second (BENCHMARKS.md "Intake"). Every accepted event is already durable in the
store, so while new events are accepted faster than WORKER_YIELD_RATE a second (replays and
refusals reach no worker and do not count), a worker thread waits before starting its next
event, at most WORKER_YIELD_MAX_S each time: the backlog keeps moving, more slowly, and the
worker runs at full speed again as soon as the burst eases. Scale mode has no such gate: its
workers are processes of their own.

    gate = BurstGate(rate=1000, max_wait_s=0.25)
    gate.arrived()          # on every submission
    gate.wait(stopping)     # a worker thread, before each event
"""

from __future__ import annotations

import threading
import time

WINDOW_S = 0.05  # the arrival rate is measured over at least this long


class BurstGate:
    """Holds worker threads back while submissions arrive faster than `rate` a second.

    `rate` 0 turns the gate off. The rate is measured between two looks by any worker thread,
    at least WINDOW_S apart, so the first look after a quiet spell sees a low rate and does not
    wait.
    """

    def __init__(self, *, rate: float, max_wait_s: float) -> None:
        self._rate = rate
        self._max_wait_s = max_wait_s
        # Written only by submitting code (the event loop); a lost increment only blurs a rate.
        self._arrivals = 0
        self._lock = threading.Lock()
        self._seen_at = time.monotonic()
        self._seen_arrivals = 0
        self._last_rate = 0.0

    def arrived(self) -> None:
        self._arrivals += 1

    def wait(self, stopping: threading.Event) -> float:
        """Wait while the burst lasts, at most `max_wait_s` (or until `stopping` is set);
        return the seconds waited."""
        if self._rate <= 0:
            return 0.0
        started = time.monotonic()
        while self.arrival_rate() > self._rate:
            left = started + self._max_wait_s - time.monotonic()
            if left <= 0 or stopping.wait(min(WINDOW_S, left)):
                break
        return time.monotonic() - started

    def arrival_rate(self) -> float:
        """Submissions a second since the previous measurement, once that is WINDOW_S old;
        until then the larger of that measurement and what has arrived since, counted over a
        whole window (so a burst shows within its first milliseconds, never overstated)."""
        with self._lock:
            now = time.monotonic()
            elapsed = now - self._seen_at
            arrived = self._arrivals - self._seen_arrivals
            if elapsed < WINDOW_S:
                return max(self._last_rate, arrived / WINDOW_S)
            self._last_rate = arrived / elapsed
            self._seen_at, self._seen_arrivals = now, self._arrivals
            return self._last_rate
