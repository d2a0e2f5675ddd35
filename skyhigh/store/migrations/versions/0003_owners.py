"""Every event has an owner; stored keys hold the owner's namespace (skyhigh.domain.tenancy).

Events from before tenancy were all made with static API tokens, so they get that principal
(`token`), whose keys are the plain event ids: nothing else about them changes. The key columns
grow from 128 to 192 characters for the namespace prefix (`<32 hex>~<event id>`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATIC_OWNER = "token"  # skyhigh.domain.tenancy.STATIC_OWNER, frozen here as migrations are


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        # The server default fills existing rows; it is dropped below so that every insert
        # must name its owner (an event without one would silently join the static tenant).
        batch.add_column(
            sa.Column("owner", sa.String(256), nullable=False, server_default=STATIC_OWNER)
        )
        batch.alter_column(
            "event_id", type_=sa.String(192), existing_type=sa.String(128), existing_nullable=False
        )
    with op.batch_alter_table("events") as batch:
        batch.alter_column("owner", server_default=None, existing_type=sa.String(256))
    op.create_index("ix_events_owner_seq", "events", ["owner", "seq"])
    if not sa.inspect(op.get_bind()).has_table("webhook_deliveries"):
        return  # a database from before migrations: the table is created with the new width
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column(
            "event_id", type_=sa.String(192), existing_type=sa.String(128), existing_nullable=False
        )


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("webhook_deliveries"):
        with op.batch_alter_table("webhook_deliveries") as batch:
            batch.alter_column(
                "event_id",
                type_=sa.String(128),
                existing_type=sa.String(192),
                existing_nullable=False,
            )
    op.drop_index("ix_events_owner_seq", "events")
    with op.batch_alter_table("events") as batch:
        batch.alter_column(
            "event_id", type_=sa.String(128), existing_type=sa.String(192), existing_nullable=False
        )
        batch.drop_column("owner")
