"""Prometheus metrics, defined once per process (prometheus-client's default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter(
    "skyhigh_events_accepted_total", "Events accepted with 202 (new, not replays).", ["event_type"]
)
EVENTS_COMPLETED = Counter(
    "skyhigh_events_completed_total", "Events that reached completed.", ["event_type"]
)
EVENTS_FAILED = Counter(
    "skyhigh_events_failed_total",
    "Events that reached failed, by error code.",
    ["event_type", "code"],
)
QUEUE_DEPTH = Gauge("skyhigh_queue_depth", "Events accepted and not yet finished in this process.")
WORKER_YIELD_SECONDS = Counter(
    "skyhigh_worker_yield_seconds_total",
    "Seconds the embedded worker threads waited for a burst of submissions to pass.",
)
STEP_SECONDS = Histogram(
    "skyhigh_step_duration_seconds",
    "Duration of each pipeline step.",
    ["event_type", "step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
