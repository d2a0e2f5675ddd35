"""Is a configured secret good enough to start with? (skyhigh.config refuses the ones that are not)

A secret that anyone could guess is worse than none: a placeholder JWT_SECRET lets anyone sign
an `admin` token. Refused, whatever the case:

* the placeholders shipped in `.env.example` and its docs, also repeated
  (`change-mechange-me...`) or with other separators;
* a single repeated character (`aaaa...`);
* fewer estimated bits than the secret's minimum (`min_bits`).

The estimate is length x log2(alphabet). The length is that of the shortest piece the secret
repeats (`abcdefgh` x 5 counts 8 characters); the alphabet is the smaller of the character
classes used (lower, upper, digits, other) and twice the number of distinct characters. An
upper bound for a human-made string, and never under the true strength of
`secrets.token_urlsafe` or `token_hex` output (token_hex(16), 128 bits, passes 128).

Usage::

    problem = secret_problem("JWT_SECRET", value, min_bits=128, how=GENERATE_48)
    if problem is not None:
        raise ValueError(problem)
"""

from __future__ import annotations

import math
import re
import string

# Compared without case and separators: "Change_Me" and "CHANGE-ME" are the same placeholder.
PLACEHOLDERS = ("changeme", "yourtokenhere", "replaceme", "secret", "password", "token")
_SEPARATORS = re.compile(r"[^a-z0-9]")
GENERATE_32 = "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
GENERATE_48 = "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"


def is_placeholder(value: str) -> bool:
    """A shipped placeholder, in any case, alone or repeated, with any separators."""
    letters = _SEPARATORS.sub("", value.lower())
    if not letters:
        return True  # only separators ("----")
    for placeholder in PLACEHOLDERS:
        count, rest = divmod(len(letters), len(placeholder))
        if rest == 0 and letters == placeholder * count:
            return True
    return False


def estimated_bits(value: str) -> float:
    """length (of the repeated piece) x log2(alphabet): see the module docstring."""
    classes = (
        string.ascii_lowercase,
        string.ascii_uppercase,
        string.digits,
    )
    alphabet = sum(len(chars) for chars in classes if any(c in chars for c in value))
    if any(not (c.isascii() and c.isalnum()) for c in value):
        alphabet += 33  # punctuation, space and anything else
    # Few distinct characters bound the alphabet too; twice their number, so that a random
    # token that happens not to use every character of its class is not underestimated.
    alphabet = min(alphabet, 2 * len(set(value)))
    return _period(value) * math.log2(alphabet) if alphabet > 1 else 0.0


def _period(value: str) -> int:
    """The length of the shortest piece `value` repeats ("abcabcab": 3): a repeat adds nothing."""
    for length in range(1, len(value) // 2 + 1):
        if all(value[i] == value[i - length] for i in range(length, len(value))):
            return length
    return len(value)


def secret_problem(name: str, value: str, *, min_bits: int, how: str) -> str | None:
    """Why `value` is not good enough for setting `name`, with how to make one; None if it is."""
    if is_placeholder(value):
        reason = "still holds a placeholder (as in .env.example)"
    elif len(set(value)) <= 1:
        reason = "is one repeated character"
    elif estimated_bits(value) < min_bits:
        reason = (
            f"is too easy to guess (about {estimated_bits(value):.0f} bits; "
            f"at least {min_bits} needed)"
        )
    else:
        return None
    return f"{name} {reason}: generate a random one, e.g. {how}"
