"""The embedded worker yields to bursts of submissions (skyhigh.processing.burst_gate): real
threads and a real InProcessDispatcher, a burst driven from another thread as the event loop
would submit."""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY

from skyhigh.processing.burst_gate import BurstGate
from skyhigh.processing.dispatch import InProcessDispatcher

BURST_S = 0.6
BURST_EVENTS = 1200  # ~2000 submissions a second


def burst(dispatcher: InProcessDispatcher) -> tuple[float, float]:
    """Submit BURST_EVENTS at an even pace over BURST_S; the burst's start and end."""
    started = time.monotonic()
    for index in range(BURST_EVENTS):
        assert dispatcher.reserve()
        dispatcher.submit(f"e{index}", event_type="query")
        due = started + BURST_S * (index + 1) / BURST_EVENTS
        while time.monotonic() < due:
            pass  # sleep() is too coarse for half-millisecond steps
    return started, time.monotonic()


def run_burst(gate: BurstGate | None) -> tuple[list[float], float, float, bool]:
    """When each event started, the burst's bounds, and whether the backlog drained."""
    starts: list[float] = []

    def process(key: str) -> None:
        starts.append(time.monotonic())
        time.sleep(0.001)

    dispatcher = InProcessDispatcher(process, concurrency=1, max_pending=BURST_EVENTS, gate=gate)
    dispatcher.start([])
    try:
        begun, ended = burst(dispatcher)
        deadline = time.monotonic() + 20
        while dispatcher.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        return starts, begun, ended, dispatcher.pending() == 0
    finally:
        dispatcher.stop(grace_s=5)


def yielded_s() -> float:
    return REGISTRY.get_sample_value("skyhigh_worker_yield_seconds_total") or 0.0


def test_the_worker_waits_out_a_burst_and_then_works_off_the_backlog() -> None:
    before = yielded_s()
    gated, begun, ended, drained = run_burst(BurstGate(rate=500, max_wait_s=0.2))
    assert yielded_s() - before >= 0.2  # the wait shows in /metrics
    during = [t for t in gated if begun <= t < ended]
    # The first events of the burst go at once, until the gate has seen the rate (a few
    # milliseconds of submissions); then one event per 0.2 s at most.
    most = 5 + BURST_S / 0.2
    assert 1 <= len(during) <= most, len(during)
    assert drained and len(gated) == BURST_EVENTS  # nothing lost: the backlog ran after

    # Without the gate the worker keeps starting events through the burst (~100 here).
    ungated, begun, ended, drained = run_burst(None)
    assert drained and len([t for t in ungated if begun <= t < ended]) > 2 * most


def test_the_gate_never_waits_after_a_quiet_spell_when_off_or_when_stopping() -> None:
    stopping = threading.Event()
    gate = BurstGate(rate=100, max_wait_s=5)
    time.sleep(0.06)
    assert gate.wait(stopping) < 0.01  # nothing arrived: no burst

    for _ in range(1000):
        gate.arrived()
    time.sleep(0.06)
    assert gate.arrival_rate() > 100  # 1000 arrivals in ~60 ms
    stopping.set()
    assert gate.wait(stopping) < 0.1  # stopping ends the wait at once

    off = BurstGate(rate=0, max_wait_s=5)
    for _ in range(1000):
        off.arrived()
    assert off.wait(threading.Event()) == 0.0
