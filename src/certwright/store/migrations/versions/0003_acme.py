"""ACME state: nonces, accounts, EAB keys, orders, authorizations, challenges.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certwright.store.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acme_nonces",
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("value", name="pk_acme_nonces"),
    )
    op.create_index("ix_acme_nonces_expires_at", "acme_nonces", ["expires_at"])
    op.create_table(
        "acme_accounts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("thumbprint", sa.String(64), nullable=False),
        sa.Column("jwk", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("tos_agreed", sa.Boolean, nullable=False),
        sa.Column("eab_kid", sa.String(64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acme_accounts"),
        sa.UniqueConstraint("profile", "thumbprint", name="uq_acme_accounts_profile_thumbprint"),
    )
    op.create_table(
        "acme_eab_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("hmac_key", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("account_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_acme_eab_keys"),
    )
    op.create_table(
        "acme_orders",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("identifiers", sa.Text, nullable=False),
        sa.Column("authorizations", sa.Text, nullable=False),
        sa.Column("not_before", UtcDateTime(), nullable=True),
        sa.Column("not_after", UtcDateTime(), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("serial", sa.String(48), nullable=True),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acme_orders"),
    )
    op.create_index("ix_acme_orders_account_id", "acme_orders", ["account_id"])
    op.create_index("ix_acme_orders_created_at", "acme_orders", ["created_at"])
    op.create_table(
        "acme_authorizations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("identifier_type", sa.String(8), nullable=False),
        sa.Column("identifier_value", sa.String(255), nullable=False),
        sa.Column("wildcard", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acme_authorizations"),
    )
    op.create_index("ix_acme_authorizations_account_id", "acme_authorizations", ["account_id"])
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("authz_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validated_at", UtcDateTime(), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_acme_challenges"),
    )
    op.create_index("ix_acme_challenges_authz_id", "acme_challenges", ["authz_id"])


def downgrade() -> None:
    for table in ("acme_challenges", "acme_authorizations", "acme_orders", "acme_eab_keys",
                  "acme_accounts", "acme_nonces"):
        op.drop_table(table)
