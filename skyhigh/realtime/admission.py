"""Who may open a realtime session now: caps per principal and per machine, and lag.

A session whose decoding falls behind the audio helps no one, and every session shares one
model: when any running session's oldest undecoded turn has waited longer than
REALTIME_MAX_LAG_S, or REALTIME_MAX_SESSIONS are open, a new session is refused (an `error`
event, then close) rather than making every session lag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from skyhigh.config import RealtimeSettings


class Refused(Exception):
    """The message says why, and which setting decides it."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class SessionAdmission:
    def __init__(self, settings: RealtimeSettings) -> None:
        self._settings = settings
        self._by_owner: Counter[str] = Counter()
        self._lags: dict[int, Callable[[], float]] = {}

    @property
    def open_sessions(self) -> int:
        return sum(self._by_owner.values())

    def worst_lag_s(self) -> float:
        return max((lag() for lag in self._lags.values()), default=0.0)

    @contextmanager
    def admit(self, owner: str, lag: Callable[[], float]) -> Iterator[None]:
        """Hold a place for the session while the block runs; Refused if there is none."""
        self.check(owner)
        self._by_owner[owner] += 1
        token = id(lag)
        self._lags[token] = lag
        try:
            yield
        finally:
            self._lags.pop(token, None)
            self._by_owner[owner] -= 1
            if self._by_owner[owner] <= 0:
                del self._by_owner[owner]

    def check(self, owner: str) -> None:
        settings = self._settings
        if self._by_owner[owner] >= settings.realtime_sessions_per_principal:
            raise Refused(
                f"{settings.realtime_sessions_per_principal} realtime sessions are open for this "
                "principal (REALTIME_SESSIONS_PER_PRINCIPAL); close one first",
                "session_limit_reached",
            )
        if self.open_sessions >= settings.realtime_max_sessions:
            raise Refused(
                f"this server runs {settings.realtime_max_sessions} realtime sessions, its "
                "maximum (REALTIME_MAX_SESSIONS); try again later",
                "server_busy",
            )
        lag = self.worst_lag_s()
        if lag > settings.realtime_max_lag_s:
            raise Refused(
                f"realtime decoding is {lag:.1f} s behind (REALTIME_MAX_LAG_S "
                f"{settings.realtime_max_lag_s:g} s); try again later",
                "server_busy",
            )
