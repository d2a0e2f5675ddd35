"""URLs fit for error messages, logs and API answers.

Clients put secrets in URLs: userinfo, signed query strings (presigned object-store URLs, a
receiver's own token), fragments. What is shown keeps scheme, host, port and path only.
"""

from __future__ import annotations

import httpx


def redact_url(url: str | httpx.URL) -> str:
    """The URL without userinfo, query or fragment."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(invalid URL)"
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
