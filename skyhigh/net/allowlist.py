"""Host allow-lists such as AUDIO_URL_ALLOWED_HOSTS, matched the way admins write them.

Entries are exact hosts, `*.example.com` (any subdomain, not the apex) or `*` (any host).
Case, a trailing dot, IPv6 brackets and spellings of one IPv6 address do not matter, and an
internationalized name matches in either its Unicode or its punycode form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import httpx


def host_allowed(url: httpx.URL, allowed_hosts: Sequence[str]) -> bool:
    """Whether the URL's host matches an allow-list entry."""
    # Admins may write an IDN in either form, so both are compared.
    names = {_normalize_host(url.host), _normalize_host(url.raw_host.decode("ascii"))}
    for entry in allowed_hosts:
        pattern = _normalize_host(entry)
        if pattern == "*" or pattern in names:
            return True
        if pattern.startswith("*.") and any(name.endswith(pattern[1:]) for name in names):
            return True
    return False


def _normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per IPv6 address
    except ValueError:
        return host
