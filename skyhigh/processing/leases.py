"""Leases on the events a process is working on, renewed in the background.

A claim gives the worker a lease (EVENT_LEASE_S); while the event runs, this keeper renews it
every third of that, so only a worker that stopped renewing (it died, or its host vanished)
loses the event to another's claim. One thread per process renews every held event, however
many worker threads there are.

Usage::

    leases = LeaseKeeper(store, owner="host:123", lease_s=60)
    leases.start()
    with leases.hold("e1"):
        ...  # long work; the lease stays alive
    leases.stop()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from skyhigh.store.events import EventStore

log = logging.getLogger("skyhigh.processing.leases")


def new_owner() -> str:
    """A name for this process's leases: readable (host, pid) and unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    def __init__(self, store: EventStore, *, owner: str, lease_s: float) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="skyhigh-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._lock:
            self._held.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(key)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def _run(self) -> None:
        while not self._stopping.wait(self.lease_s / 3):
            for key in self.held():
                try:
                    if not self.store.renew(key, owner=self.owner, lease_s=self.lease_s):
                        # Logs name the stored key `event_id`, as event_id_var does in the pipeline.
                        log.warning("lease lost", extra={"event_id": key})
                except Exception:
                    # A store outage: keep trying; the lease may still be saved next round.
                    log.exception("lease renewal failed", extra={"event_id": key})
