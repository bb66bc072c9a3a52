"""Monitor: a declared expectation remembers which configuration last spoke of it, and is
withdrawn (kept, marked) instead of deleted; a finding says how it was closed.

``config_version`` orders the configurations evaluators hold (see store/monitor.py
``register_config``): only an evaluator whose configuration is at least as new may
withdraw or change the row. ``deadline`` and ``grace_seconds`` are what that configuration
set, so every evaluator judges the row alike. ``closed_as`` is ``resolved`` or ``withdrawn``.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certwright.store.schema import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("monitor_expectations", sa.Column("config_version", sa.Integer, nullable=True))
    op.add_column("monitor_expectations", sa.Column("deadline", UtcDateTime(), nullable=True))
    op.add_column("monitor_expectations", sa.Column("grace_seconds", sa.Integer, nullable=True))
    op.add_column("monitor_expectations", sa.Column("withdrawn_at", UtcDateTime(), nullable=True))
    op.add_column("monitor_findings", sa.Column("closed_as", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_findings") as t:
        t.drop_column("closed_as")
    with op.batch_alter_table("monitor_expectations") as t:
        t.drop_column("withdrawn_at")
        t.drop_column("grace_seconds")
        t.drop_column("deadline")
        t.drop_column("config_version")
