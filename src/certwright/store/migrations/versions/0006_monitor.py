"""Monitor state: check-in tokens, agents, expectations, findings.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certwright.store.schema import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_tokens",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("host", name="pk_monitor_tokens"),
    )
    op.create_table(
        "monitor_agents",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("interval_seconds", sa.Integer, nullable=True),
        sa.Column("checked_in_at", UtcDateTime(), nullable=False),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("host", name="pk_monitor_agents"),
    )
    op.create_table(
        "monitor_expectations",
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("spec", sa.String(255), nullable=True),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("issuer", sa.Text, nullable=True),
        sa.Column("names", sa.Text, nullable=False),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.Column("serial", sa.String(48), nullable=True),
        sa.Column("cert_names", sa.Text, nullable=True),
        sa.Column("not_before", UtcDateTime(), nullable=True),
        sa.Column("not_after", UtcDateTime(), nullable=True),
        sa.Column("last_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("failing_since", UtcDateTime(), nullable=True),
        sa.Column("next_renewal_at", UtcDateTime(), nullable=True),
        sa.Column("observed_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_monitor_expectations"),
    )
    op.create_index("ix_monitor_expectations_host", "monitor_expectations", ["host"])
    op.create_table(
        "monitor_findings",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("key", sa.String(600), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("since", UtcDateTime(), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("alerted_at", UtcDateTime(), nullable=True),
        sa.Column("resolve_due", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_findings"),
    )
    op.create_index("ix_monitor_findings_resolved_at", "monitor_findings", ["resolved_at"])
    op.create_index("ix_monitor_findings_resolve_due", "monitor_findings", ["resolve_due"])
    op.create_index("uq_monitor_findings_open_key", "monitor_findings", ["key"], unique=True,
                    sqlite_where=sa.text("resolved_at IS NULL"),
                    postgresql_where=sa.text("resolved_at IS NULL"))


def downgrade() -> None:
    op.drop_table("monitor_findings")
    op.drop_index("ix_monitor_expectations_host", "monitor_expectations")
    op.drop_table("monitor_expectations")
    op.drop_table("monitor_agents")
    op.drop_table("monitor_tokens")
