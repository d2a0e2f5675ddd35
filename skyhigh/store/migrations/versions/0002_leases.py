"""Leases for processes that share the store: who works on an event, and until when.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        # When the event was last handed to the broker; the sweeper re-sends stale ones.
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_events_status_lease", "events", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_events_status_lease", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("enqueued_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
