"""Bring the event store's schema to the newest revision (Alembic), safely from many processes.

Every process that opens the store calls `upgrade(engine)` at start-up; `python -m
skyhigh.cli.migrate` does the same by hand. On Postgres an advisory lock makes concurrent
starters (an API and ten workers) take turns; on SQLite the database's write lock does. A
database created before migrations existed (tables, no `alembic_version`) is stamped with the
first revision, whose schema it has, and then upgraded like any other.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"
_PG_LOCK_KEY = 0x5C1A1  # any constant shared by every SkyHigh process


def upgrade(engine: Engine, *, attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            _upgrade_once(engine)
            return
        except DBAPIError:
            # SQLite has no advisory lock: two starters may both see an old revision and one
            # loses the race; the next pass sees the winner's schema and has nothing to do.
            if attempt == attempts or engine.dialect.name != "sqlite":
                raise
            time.sleep(0.2 * attempt)


def _upgrade_once(engine: Engine) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config = _config(connection)
        tables = set(inspect(connection).get_table_names())
        if "events" in tables and "alembic_version" not in tables:
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, "head")


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config
