"""Which part of the API a path belongs to: the one rule for "under a prefix"."""

from __future__ import annotations


def under(path: str, *prefixes: str) -> bool:
    """True for the prefix itself and anything below it (`/v1`, `/v1/models`, not `/v1x`)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)
