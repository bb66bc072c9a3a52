"""ACME orders remember which certificate they replace (RFC 9773 section 5).

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
    with op.batch_alter_table("acme_orders") as batch:
        batch.add_column(sa.Column("replaces", sa.String(160), nullable=True))
        batch.create_index("ix_acme_orders_replaces", ["replaces"])


def downgrade() -> None:
    with op.batch_alter_table("acme_orders") as batch:
        batch.drop_index("ix_acme_orders_replaces")
        batch.drop_column("replaces")
