"""One real server in JWT mode for the modules that test principals over HTTP.

test_security_limits, test_tenancy and test_transcript_privacy each used to start their own
JWT-mode server (a model load each); they now share the session's `jwt_server` (conftest.py).
Its settings are the union of what they need: one worker (a held download keeps everything
behind it queued), per-principal caps on pending events, live streams, requests and audio, and
short connection timers (the tests that wait for them wait seconds, not minutes).

Quotas and queue shares are per principal, so each module signs its own subjects (`Signer`
with a prefix): one module's used-up minutes or rate limit never meet another's, and neither
do their event ids.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.support.settings import server_env

JWT_SECRET = "shared-jwt-test-secret-0123456789abcdefghij"  # HS256 wants >= 32 bytes
MAX_PENDING_EVENTS = 64
MAX_PENDING_PER_PRINCIPAL = 8  # room for eight parallel uploads: the audio quota must stop them
MAX_STREAMS_PER_PRINCIPAL = 3
RATE_LIMIT_PER_MINUTE = 600
AUDIO_MINUTES_PER_HOUR = 0.3  # 18 s: one JFK clip (11 s) fits, a second does not
# Short, so the tests that wait for a silent or stalled connection to be cut wait little; long
# enough that a client sending its head or body in one go never comes near them.
HEAD_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5


def jwt_server_env(tmp: Path) -> dict[str, str]:
    return server_env(
        tmp,
        AUTH_MODE="jwt",
        JWT_SECRET=JWT_SECRET,
        MAX_PENDING_EVENTS=str(MAX_PENDING_EVENTS),
        MAX_PENDING_PER_PRINCIPAL=str(MAX_PENDING_PER_PRINCIPAL),
        MAX_STREAMS_PER_PRINCIPAL=str(MAX_STREAMS_PER_PRINCIPAL),
        RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT_PER_MINUTE),
        AUDIO_MINUTES_PER_HOUR=str(AUDIO_MINUTES_PER_HOUR),
        REQUEST_HEAD_TIMEOUT_S=str(HEAD_TIMEOUT_S),
        REQUEST_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        # The held downloads of test_security_limits: loopback only.
        AUDIO_URL_ALLOWED_HOSTS="127.0.0.1",
        AUDIO_URL_ALLOW_PRIVATE="true",
        WORKER_CONCURRENCY="1",
        # Not about accuracy (JFK's line decodes right either way): greedy decoding is quicker.
        WHISPER_BEAM_SIZE="1",
    )


class Signer:
    """Tokens for one module's principals: subject `alice` is `<prefix>alice` on the server."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def subject(self, sub: str) -> str:
        return self.prefix + sub

    def owner(self, sub: str) -> str:
        """The stored owner of `sub`'s events (what an admin sees and names)."""
        return f"jwt:{self.subject(sub)}"

    def token(self, sub: str | None, scope: str | None = None) -> str:
        """A signed token valid for an hour; `sub=None` leaves the claim out."""
        claims: dict[str, Any] = {"exp": int(time.time()) + 3600}
        if sub is not None:
            claims["sub"] = self.subject(sub)
        if scope is not None:
            claims["scope"] = scope
        return jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    def client(self, base_url: str, sub: str, scope: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(sub, scope)}"}
        return httpx.Client(base_url=base_url, headers=headers, timeout=60.0)
