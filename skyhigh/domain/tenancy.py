"""Principals, scopes and event ownership: who may see and do what.

A *principal* is whoever a credential speaks for. Every static token in `API_TOKENS` is the
same principal (`token`), so rotating tokens keeps access to the events made with the old
one; each JWT `sub` is its own principal (`jwt:<sub>`). Scopes come from the OAuth2-style
`scope` claim (space-separated); `admin` implies every other scope.

Who gets what, and why:

- static tokens (and the keyless development mode): `events:read events:write
  knowledge:write`, which is everything the service allowed before tenancy existed. They are
  one tenant, not an administrator: they never see JWT principals' events.
- a JWT without a `scope` claim: `events:read events:write`, least privilege that still lets
  an app submit and read its own events; writing the shared knowledge base must be granted.

Event ownership without touching the pipeline. A client's `event_id` is unique only within
its principal, so the store keys an event by `event_key(owner, event_id)`, and that key is
what the pipeline, leases, Celery tasks, live streams, spool names and webhook deliveries
use, unchanged. The mapping happens at the API/intake boundary only (`event_key`), and the
store turns keys back into the public id when it builds a record (`public_event_id`), so
every response, live message and webhook body carries the client's own `event_id`.

- The static principal's key is the event id itself: events stored before tenancy (owner
  backfilled to `token` by migration 0003) keep their keys and stay reachable.
- Any other principal's key is `<digest>~<event_id>`, the digest a hash of the owner: bounded
  length and safe characters for Redis keys and file names, whatever the `sub` holds. `~`
  never occurs in an event id, so no id can be made to look like another principal's key,
  and a key never collides with a static one.
- A foreign event is therefore simply not found (404, never 403): a request can only name
  keys in its own namespace. `admin` may name another owner explicitly (`?owner=`).
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field

# The rule endpoint.EventId enforces on ids clients choose.
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
KEY_SEPARATOR = "~"  # not allowed in an event id
_DIGEST_CHARS = 32  # 128 bits of sha256: collisions are out of reach
KEY_MAX_LENGTH = _DIGEST_CHARS + 1 + 128

STATIC_OWNER = "token"
JWT_OWNER_PREFIX = "jwt:"
MAX_SUBJECT_LENGTH = 200


class Scope(enum.StrEnum):
    EVENTS_WRITE = "events:write"
    EVENTS_READ = "events:read"
    KNOWLEDGE_WRITE = "knowledge:write"
    ADMIN = "admin"


STATIC_SCOPES = frozenset({Scope.EVENTS_READ, Scope.EVENTS_WRITE, Scope.KNOWLEDGE_WRITE})
DEFAULT_JWT_SCOPES = frozenset({Scope.EVENTS_READ, Scope.EVENTS_WRITE})


class Forbidden(Exception):
    """The principal lacks a scope the request needs; the message names it."""

    def __init__(self, scope: Scope, what: str) -> None:
        super().__init__(f"{what} needs the {scope.value!r} scope, which this credential lacks")
        self.scope = scope


@dataclass(frozen=True)
class Principal:
    """Whoever a credential speaks for.

    Usage::

        principal = Principal.static()
        principal.require(Scope.KNOWLEDGE_WRITE, "a document event")   # raises Forbidden
        key = event_key(principal.owner, "e1")
    """

    subject: str
    method: str  # "token", "jwt" or "open"
    owner: str  # what events record as their owner
    scopes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def static(cls, *, subject: str = STATIC_OWNER, method: str = "token") -> Principal:
        return cls(subject=subject, method=method, owner=STATIC_OWNER, scopes=STATIC_SCOPES)

    @classmethod
    def from_jwt(cls, subject: str, scope_claim: object) -> Principal:
        if isinstance(scope_claim, str):
            scopes = frozenset(scope_claim.split())
        elif isinstance(scope_claim, list):  # some issuers send a list ("scp" style)
            scopes = frozenset(str(item) for item in scope_claim)
        else:
            scopes = DEFAULT_JWT_SCOPES
        return cls(subject=subject, method="jwt", owner=JWT_OWNER_PREFIX + subject, scopes=scopes)

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def has(self, scope: Scope) -> bool:
        return self.admin or scope in self.scopes

    def require(self, scope: Scope, what: str) -> None:
        if not self.has(scope):
            raise Forbidden(scope, what)


def event_key(owner: str, event_id: str) -> str | None:
    """The stored key of `owner`'s event `event_id`; None if no event can have this id."""
    if not EVENT_ID.match(event_id):
        return None  # e.g. a path segment holding `~`: it must not reach another namespace
    if owner == STATIC_OWNER:
        return event_id
    return f"{owner_namespace(owner)}{KEY_SEPARATOR}{event_id}"


def owner_namespace(owner: str) -> str:
    """The owner as its keys name it: a digest (never the `sub` itself), or `token` for the
    static principal, whose keys are bare event ids. Rows the knowledge base keeps per owner
    (indexed transcripts) record this, so a key's owner is known without the events store."""
    if owner == STATIC_OWNER:
        return STATIC_OWNER
    return hashlib.sha256(owner.encode()).hexdigest()[:_DIGEST_CHARS]


def key_namespace(key: str) -> str:
    """`owner_namespace` of the owner of a stored key."""
    namespace, separator, _ = key.rpartition(KEY_SEPARATOR)
    return namespace if separator else STATIC_OWNER


def public_event_id(key: str) -> str:
    """The client's event id inside a stored key."""
    return key.rpartition(KEY_SEPARATOR)[2]


def fairness_group(key: str) -> str:
    """Events with the same group belong to one owner (schedulers take turns between groups)."""
    return key.rpartition(KEY_SEPARATOR)[0]


# Added to an admin's stored payload by intake and read by the worker, so an admin's lookup
# sees every owner's rows in per-owner tables (transcripts). Clients cannot send it: payload
# models forbid unknown fields.
READS_ALL_OWNERS = "reads_all_owners"


def reader_fields(principal: Principal) -> dict[str, bool]:
    """What intake stores with a principal's event so the worker knows whose rows it reads."""
    return {READS_ALL_OWNERS: True} if principal.admin else {}
