"""Short-lived, single-use client secrets for realtime sessions (OpenAI's ephemeral keys).

A server holding the API token mints one (POST /v1/realtime/client_secrets) and hands it to a
browser, which opens one session with it: the secret carries the minting principal and its
scopes, expires after REALTIME_CLIENT_SECRET_TTL_S, and is spent by the first connection.
Only a digest is kept, in this process (a secret is redeemed on the server that minted it).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from skyhigh.domain.tenancy import Principal

PREFIX = "ek_"


@dataclass(frozen=True)
class Minted:
    value: str
    expires_at: int  # unix seconds


class ClientSecrets:
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._issued: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def mint(self, principal: Principal, ttl_s: int | None = None) -> Minted:
        lifetime = min(ttl_s or self.ttl_s, self.ttl_s)
        value = PREFIX + secrets.token_urlsafe(32)
        expires = time.time() + lifetime
        with self._lock:
            self._drop_expired()
            self._issued[_digest(value)] = (principal, expires)
        return Minted(value, int(expires))

    def redeem(self, value: str) -> Principal | None:
        """The principal, once; None for an unknown, expired or already used secret."""
        with self._lock:
            found = self._issued.pop(_digest(value), None)
        if found is None or found[1] < time.time():
            return None
        return found[0]

    def _drop_expired(self) -> None:
        now = time.time()
        for key in [k for k, (_, expires) in self._issued.items() if expires < now]:
            del self._issued[key]


def looks_like_client_secret(credential: str | None) -> bool:
    return credential is not None and credential.startswith(PREFIX)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
