"""Fair claims in scale mode: when each owner last had an event claimed.

Workers claim the next event of the owner served least recently
(skyhigh.store.event_leases.claim_next); this table is that order's memory. Owners absent
from it have never been served and go first.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owner_turns",
        sa.Column("owner", sa.String(256), primary_key=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("owner_turns")
