"""EST state: bootstrap credentials and requests held for an operator.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certwright.store.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "est_credentials",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("one_time", sa.Boolean, nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_est_credentials"),
    )
    op.create_table(
        "est_requests",
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("requester", sa.Text, nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_est_requests"),
        sa.UniqueConstraint("profile", "requester", "spki_sha256", "operation",
                            name="uq_est_requests_retry"),
    )


def downgrade() -> None:
    op.drop_table("est_requests")
    op.drop_table("est_credentials")
