"""Shared enrollment machinery: named shared secrets (``credentials``) and held-request
transactions (``transactions``) for every protocol, instead of EST's own tables.

The EST rows move as they are: password hashes unchanged (a password a user holds goes
on working), sealed server-generated keys unchanged (they were sealed with the request
id, which stays), and a held request's retry key (operation, public key) becomes the
transaction id ``<operation>/<spki sha256>`` that certwright.est derives from a retry.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certwright.store.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_EST = "est"


def _est_credentials() -> sa.TableClause:
    return sa.table(
        "est_credentials", sa.column("name", sa.String), sa.column("profile", sa.String),
        sa.column("secret", sa.Text), sa.column("one_time", sa.Boolean),
        sa.column("expires_at", UtcDateTime()), sa.column("used_at", UtcDateTime()),
        sa.column("created_at", UtcDateTime()))


def _est_requests() -> sa.TableClause:
    return sa.table(
        "est_requests", sa.column("request_id", sa.String),
        sa.column("profile", sa.String), sa.column("requester", sa.Text),
        sa.column("spki_sha256", sa.String), sa.column("operation", sa.String),
        sa.column("wrapped_key", sa.LargeBinary), sa.column("created_at", UtcDateTime()))


_CREDENTIAL_COLUMNS = ["name", "profile", "secret", "one_time", "expires_at", "used_at",
                       "created_at"]


def upgrade() -> None:
    credentials = op.create_table(
        "credentials",
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("one_time", sa.Boolean, nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("protocol", "name", name="pk_credentials"),
    )
    transactions = op.create_table(
        "transactions",
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("requester", sa.Text, nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_transactions"),
        sa.UniqueConstraint("protocol", "profile", "requester", "transaction_id",
                            name="uq_transactions_retry"),
    )
    old = _est_credentials()
    op.execute(credentials.insert().from_select(
        ["protocol", *_CREDENTIAL_COLUMNS],
        sa.select(sa.literal(_EST, sa.String), *(old.c[n] for n in _CREDENTIAL_COLUMNS))))
    held = _est_requests()
    op.execute(transactions.insert().from_select(
        ["request_id", "protocol", "transaction_id", "profile", "requester", "operation",
         "sealed_key", "created_at"],
        sa.select(held.c.request_id, sa.literal(_EST, sa.String),
                  held.c.operation + sa.literal("/", sa.String) + held.c.spki_sha256,
                  held.c.profile, held.c.requester, held.c.operation, held.c.wrapped_key,
                  held.c.created_at)))
    op.drop_table("est_requests")
    op.drop_table("est_credentials")


def downgrade() -> None:
    est_credentials = op.create_table(
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
    est_requests = op.create_table(
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
    creds = sa.table("credentials", sa.column("protocol", sa.String),
                     *(sa.column(n) for n in _CREDENTIAL_COLUMNS))
    op.execute(est_credentials.insert().from_select(
        _CREDENTIAL_COLUMNS,
        sa.select(*(creds.c[n] for n in _CREDENTIAL_COLUMNS)).where(creds.c.protocol == _EST)))
    txns = sa.table("transactions", sa.column("request_id"), sa.column("protocol"),
                    sa.column("transaction_id", sa.String), sa.column("profile"),
                    sa.column("requester"), sa.column("operation", sa.String),
                    sa.column("sealed_key"), sa.column("created_at"))
    # The transaction id is "<operation>/<spki sha256>": the key is what follows the '/'.
    spki = sa.func.substr(txns.c.transaction_id, sa.func.length(txns.c.operation) + 2)
    op.execute(est_requests.insert().from_select(
        ["request_id", "profile", "requester", "spki_sha256", "operation", "wrapped_key",
         "created_at"],
        sa.select(txns.c.request_id, txns.c.profile, txns.c.requester, spki,
                  txns.c.operation, txns.c.sealed_key, txns.c.created_at
                  ).where(txns.c.protocol == _EST)))
    op.drop_table("transactions")
    op.drop_table("credentials")
