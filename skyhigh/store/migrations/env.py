"""Alembic environment: runs on the connection skyhigh.store.migrate hands over."""

from __future__ import annotations

from alembic import context

from skyhigh.store.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table when it must.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
