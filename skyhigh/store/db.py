"""The event store's database: one declarative base, the engine, transactions, UTC timestamps.

Events and webhook deliveries share one database (and one engine), so their tables hang off the
same `Base` and every timestamp is written and read the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """Every table of the event store's database (events, webhook deliveries)."""


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    # SQLite drops tzinfo; every timestamp we write is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def create_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """An engine for `url`; on SQLite every connection gets WAL, `sqlite_synchronous` and a
    busy timeout."""
    # Pre-ping guards against server-side disconnects; a SQLite file has none.
    sqlite = url.startswith("sqlite")
    engine = sqlalchemy.create_engine(url, pool_pre_ping=not sqlite)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_synchronous))
    return engine


def autocommit_engine(engine: Engine) -> Engine:
    """`engine` for single-statement writes on a hot path (intake's group commit).

    Autocommit: the statement is its own transaction, so a batch is one call into the driver.
    On SQLite that is one release of the GIL instead of three (INSERT, COMMIT and the BEGIN
    before them), each of which had to wait for the busy event loop to hand the GIL back; on
    Postgres one round trip instead of four (ping, BEGIN, INSERT, COMMIT). Durability is the
    same: the database commits, and syncs, before it answers.

    Postgres connections come from a pool of their own, checked out without a ping (a round
    trip per batch): the caller sends the statement again when a connection a server restart
    dropped fails (`connection_invalidated`; SQLAlchemy replaces it). A SQLite file has
    nothing to ping.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    # One connection is what intake's one commit thread uses; the overflow serves a direct
    # `EventStore.create` (a script, a test) without holding idle connections open.
    return sqlalchemy.create_engine(
        engine.url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_size=1, max_overflow=2
    )


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers (status polls) run while a writer commits.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return on_connect


def transactions(engine: Engine) -> Callable[[], AbstractContextManager[Session]]:
    """`with transaction() as session:` commits when the block ends, rolls back on an error.

    Objects stay readable after the commit (no expiry), so a store can return what it wrote
    without another query.
    """
    return sessionmaker(engine, expire_on_commit=False).begin
