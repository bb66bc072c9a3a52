"""Seed the audit head row (seq 0, the genesis hash).

Appenders lock this row to keep the chain linear. Without it, the first append of a
fresh store had nothing to lock: two concurrent first appends on PostgreSQL both chose
seq 1. With the row in place from the start, every append finds a row to lock.

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

GENESIS = "0" * 64  # certwright.store.audit.GENESIS, frozen here as of this migration


def upgrade() -> None:
    # A store that already has records already has its head row: leave it alone.
    op.execute(
        sa.text("INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, :genesis "
                "WHERE NOT EXISTS (SELECT 1 FROM audit_head WHERE id = 1)")
        .bindparams(genesis=GENESIS)
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM audit_head WHERE id = 1 AND seq = 0"))
