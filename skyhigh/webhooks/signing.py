"""Webhook signatures per Standard Webhooks (https://www.standardwebhooks.com).

Each attempt carries `webhook-id`, `webhook-timestamp` and `webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed by WEBHOOK_SECRET. The signature itself
comes from the `standardwebhooks` package, so receivers using it (or any other implementation
of the spec) verify exactly what we send. The secret is validated here, strictly, because the
package decodes whatever it is given: a typo would otherwise sign with a key nobody holds.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 16


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional `whsec_` prefix.

    Raises ValueError, naming the setting and how to generate a good secret.
    """
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "WEBHOOK_SECRET must be whsec_<base64>; generate one with: python -c 'import "
            'base64,secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"WEBHOOK_SECRET is too short: use at least {MIN_KEY_BYTES} random bytes")
    return key


class Signer:
    """Signs outgoing webhooks with one secret (validated by `signing_key`)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(signing_key(secret))

    def headers(self, msg_id: str, body: str, *, at: datetime | None = None) -> dict[str, str]:
        """The three signature headers for sending `body` as message `msg_id` at `at` (now)."""
        # In UTC: the package reads the clock fields as UTC, whatever the datetime's zone.
        at = (at or datetime.now(UTC)).astimezone(UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, at, body),
        }
