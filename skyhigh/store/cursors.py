"""Pagination cursors: opaque to clients, validated as strictly as any other input.

A cursor is base64url JSON `{"seq": <n>}` naming the last row of a page. Clients can make
their own, so anything but a non-negative integer that fits the column (`{"seq": 1e30}`,
`{"seq": true}`, a 40-digit number) is InvalidCursor (422), never a database error.
"""

from __future__ import annotations

import base64
import json

from skyhigh.domain.errors import InvalidCursor

# SQLite and Postgres BIGINT hold signed 64-bit integers.
MAX_SEQ = 2**63 - 1


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"seq": seq}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seq = json.loads(base64.urlsafe_b64decode(padded))["seq"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidCursor(cursor) from exc
    # bool is an int subclass: `true` must not page from row 1.
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise InvalidCursor(cursor)
    return seq
