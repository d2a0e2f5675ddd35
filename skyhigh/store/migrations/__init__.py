"""Alembic migrations of the event store (SQLite and Postgres); applied by skyhigh.store.migrate."""
