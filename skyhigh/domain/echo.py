"""Client values quoted back in error messages, cut to a readable length.

An error that quotes the client's value helps it find the mistake; quoting a 1 MB `model`
field in full turns a 1 MB request into a 1 MB answer (and log line). Quote through `shown`.
"""

from __future__ import annotations

MAX_SHOWN = 64


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """repr(value), at most about `limit` characters: longer text ends with its length."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text)} characters)"
