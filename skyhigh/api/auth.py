"""Who is asking: the bearer credential read and verified once per connection.

The edge middleware (skyhigh.api.middleware) calls `authenticate` once for every request under
a protected prefix and stores the outcome in the ASGI scope (`AUTH_SCOPE_KEY`); the FastAPI
dependencies, the WebSocket routes and `/metrics` read it from there, so a JWT is decoded once.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

from pydantic import SecretStr
from starlette.types import Scope

from skyhigh.api.tokens import InvalidToken, TokenVerifier
from skyhigh.domain.tenancy import Principal

AUTH_SCOPE_KEY = "skyhigh.auth"

# Browsers cannot set headers on a WebSocket: `new WebSocket(url, ["bearer", token])` sends
# `Sec-WebSocket-Protocol: bearer, <token>`, and the server selects "bearer".
WS_BEARER_PROTOCOL = "bearer"

MISSING_TOKEN = "missing bearer token: send 'Authorization: Bearer <token>'"
CHALLENGE = "Bearer"
INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'


class Authentication(NamedTuple):
    """The outcome for one connection: a principal, or why there is none."""

    principal: Principal | None
    error: str | None = None  # the 401 detail (HTTP) or the 1008 close reason (WebSocket)
    challenge: str = CHALLENGE  # WWW-Authenticate for the 401
    subprotocol: str | None = None  # WebSocket: to echo when accepting (browsers need it)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, else None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


def subprotocol_token(offered: list[str]) -> str | None:
    """The token that follows "bearer" in the offered WebSocket subprotocols, else None."""
    if WS_BEARER_PROTOCOL not in offered:
        return None
    index = offered.index(WS_BEARER_PROTOCOL)
    return offered[index + 1] if index + 1 < len(offered) else None


def authenticate(verifier: TokenVerifier, credential: str | None) -> Authentication:
    """Verify the credential (the one place it is verified); open access only in dev mode."""
    if credential is None:
        if verifier.open_access:
            return Authentication(Principal.static(subject="dev", method="open"))
        return Authentication(None, MISSING_TOKEN)
    try:
        return Authentication(verifier.verify(credential))
    except InvalidToken as exc:
        return Authentication(None, str(exc), INVALID_TOKEN_CHALLENGE)


def authenticate_websocket(
    verifier: TokenVerifier, authorization: str | None, offered: list[str]
) -> Authentication:
    """The header's token, else the subprotocol's; the chosen subprotocol rides along."""
    subprotocol = WS_BEARER_PROTOCOL if WS_BEARER_PROTOCOL in offered else None
    credential = bearer_token(authorization) or subprotocol_token(offered)
    outcome = authenticate(verifier, credential)
    if outcome.error == MISSING_TOKEN:
        outcome = outcome._replace(error="missing bearer token")
    return outcome._replace(subprotocol=subprotocol)


def check_metrics_token(expected: SecretStr, authorization: str | None) -> Authentication:
    """/metrics with METRICS_TOKEN set: that token, and not an API token, as the bearer.

    A separate token: a scraper should not hold a key that can submit events.
    """
    presented = bearer_token(authorization)
    if presented is None:
        return Authentication(None, "missing bearer token: /metrics needs METRICS_TOKEN")
    if not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        return Authentication(
            None, "the bearer token is not the METRICS_TOKEN", INVALID_TOKEN_CHALLENGE
        )
    return Authentication(None)


def authentication_of(scope: Scope) -> Authentication | None:
    """What the middleware decided for this connection; None if it did not look."""
    outcome: Authentication | None = scope.get(AUTH_SCOPE_KEY)
    return outcome
