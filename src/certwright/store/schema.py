"""Tables. Changes to this file go with a migration in ``migrations/versions``.

Times are stored as timezone-aware UTC; serial numbers as lower-case hex without
leading zeros, so they sort and compare as text within one length.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial", sa.String(48), primary_key=True),
    sa.Column("issuer", sa.String(64), nullable=False),  # issuing CA id
    sa.Column("profile", sa.String(64), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("names", sa.Text, nullable=False),  # JSON list of "type:value"
    sa.Column("not_before", UtcDateTime(), nullable=False),
    sa.Column("not_after", UtcDateTime(), nullable=False, index=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),  # SHA-256 hex
    sa.Column("der", sa.LargeBinary, nullable=False),
    sa.Column("request_id", sa.String(32), nullable=True),
    sa.Column("requester", sa.Text, nullable=False),
    sa.Column("protocol", sa.String(16), nullable=False),
    sa.Column("issued_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True, index=True),
    sa.Column("revocation_reason", sa.String(32), nullable=True),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("profile", sa.String(64), nullable=False),
    sa.Column("protocol", sa.String(16), nullable=False),
    sa.Column("requester", sa.Text, nullable=False),
    sa.Column("csr", sa.LargeBinary, nullable=False),
    sa.Column("names", sa.Text, nullable=False),
    sa.Column("not_before", UtcDateTime(), nullable=True),
    sa.Column("not_after", UtcDateTime(), nullable=True),
    # pending -> issued | rejected ; approved only transiently inside one transaction
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("decided_at", UtcDateTime(), nullable=True),
    sa.Column("decided_by", sa.Text, nullable=True),
    sa.Column("serial", sa.String(48), nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("event", sa.String(48), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # canonical JSON
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# One row: the newest link of the chain. Appenders lock it, so the chain stays linear
# when several processes (replicas) write; verification compares it with the last row,
# which catches a deleted tail.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

crls = sa.Table(
    "crls",
    metadata,
    sa.Column("issuer", sa.String(64), primary_key=True),
    sa.Column("number", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("this_update", UtcDateTime(), nullable=False),
    sa.Column("next_update", UtcDateTime(), nullable=False),
    sa.Column("der", sa.LargeBinary, nullable=False),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# -- ACME (RFC 8555) protocol state. Owned by certwright.acme; the RA and the Authority
# never read these. Identifiers are random URL-safe strings.

acme_nonces = sa.Table(
    "acme_nonces",
    metadata,
    sa.Column("value", sa.String(64), primary_key=True),
    sa.Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

acme_accounts = sa.Table(
    "acme_accounts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("profile", sa.String(64), nullable=False),
    # RFC 7638 thumbprint of the account key: one account per key and directory.
    sa.Column("thumbprint", sa.String(64), nullable=False),
    sa.Column("jwk", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("contact", sa.Text, nullable=False),  # JSON list
    sa.Column("tos_agreed", sa.Boolean, nullable=False),
    sa.Column("eab_kid", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("profile", "thumbprint", name="uq_acme_accounts_profile_thumbprint"),
)

acme_eab_keys = sa.Table(
    "acme_eab_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("profile", sa.String(64), nullable=False),
    # The server must compute the HMAC, so the key itself is kept (not a hash of it).
    sa.Column("hmac_key", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("account_id", sa.String(32), nullable=True),
)

acme_orders = sa.Table(
    "acme_orders",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(32), nullable=False, index=True),
    sa.Column("profile", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("identifiers", sa.Text, nullable=False),  # JSON [{"type","value"}]
    sa.Column("authorizations", sa.Text, nullable=False),  # JSON [authz id]
    sa.Column("not_before", UtcDateTime(), nullable=True),
    sa.Column("not_after", UtcDateTime(), nullable=True),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("error", sa.Text, nullable=True),  # JSON problem document
    sa.Column("serial", sa.String(48), nullable=True),
    sa.Column("request_id", sa.String(32), nullable=True),  # held for manual approval
    sa.Column("created_at", UtcDateTime(), nullable=False, index=True),
    # RFC 9773 certID of the certificate this order replaces.
    sa.Column("replaces", sa.String(160), nullable=True, index=True),
)

acme_authorizations = sa.Table(
    "acme_authorizations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(32), nullable=False, index=True),
    sa.Column("profile", sa.String(64), nullable=False),
    sa.Column("identifier_type", sa.String(8), nullable=False),
    sa.Column("identifier_value", sa.String(255), nullable=False),
    sa.Column("wildcard", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

acme_challenges = sa.Table(
    "acme_challenges",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("authz_id", sa.String(32), nullable=False, index=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("validated_at", UtcDateTime(), nullable=True),
    sa.Column("error", sa.Text, nullable=True),  # JSON problem document
)

# -- Enrollment machinery every protocol shares (certwright.ca.credentials, .transactions).

# Named shared secrets, each bound to the protocol that accepts it and to one profile (EST
# passwords; SCEP challenges and CMP secrets next). Only a salted hash of the secret is
# kept ("scrypt$N$r$p$salt$hash", base64 parts).
credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("protocol", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("profile", sa.String(64), nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("one_time", sa.Boolean, nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("used_at", UtcDateTime(), nullable=True),  # one-time: when it was spent
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

# Requests held for an operator (requests.id) under the protocol's own transaction id, so
# the client's retry or poll finds them (EST RFC 7030 4.2.3, SCEP CertPoll, CMP pollReq).
# A row goes when its outcome has been handed to the client.
transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("request_id", sa.String(32), primary_key=True),
    sa.Column("protocol", sa.String(16), nullable=False),
    sa.Column("transaction_id", sa.String(128), nullable=False),
    sa.Column("profile", sa.String(64), nullable=False),
    sa.Column("requester", sa.Text, nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    # A server-generated private key, AES-GCM under a key derived from the requester's
    # shared secret, until the certificate is collected with it.
    sa.Column("sealed_key", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("protocol", "profile", "requester", "transaction_id",
                        name="uq_transactions_retry"),
)

# -- The monitor's state. Owned by certwright.monitor; the RA and the Authority never read
# these.

# Per-host check-in credentials: only a salted HMAC-SHA256 of the bearer token is kept
# ("hmac-sha256$salt$hash", base64url parts); the token has 256 bits of entropy.
monitor_tokens = sa.Table(
    "monitor_tokens",
    metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

# The last check-in of each agent.
monitor_agents = sa.Table(
    "monitor_agents",
    metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("interval_seconds", sa.Integer, nullable=True),  # what the agent promised
    sa.Column("checked_in_at", UtcDateTime(), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
)

# Every expected certificate: one per spec an agent reported (source "agent"), per
# declared expectation and endpoint of the configuration ("declared", "endpoint"). The
# observed columns hold what the agent reported, or what the last evaluation found. A
# declared/endpoint row carries the version of the newest configuration that declared or
# withdrew it (only an evaluator holding one at least as new may change it), the deadline
# or grace that configuration set, and when it was withdrawn (the row stays, so an evaluator with
# an older configuration cannot declare it again).
monitor_expectations = sa.Table(
    "monitor_expectations",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255), nullable=False, index=True),
    sa.Column("spec", sa.String(255), nullable=True),
    sa.Column("profile", sa.String(64), nullable=True),
    sa.Column("issuer", sa.Text, nullable=True),
    sa.Column("names", sa.Text, nullable=False),  # JSON list of "type:value"
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("serial", sa.String(48), nullable=True),
    sa.Column("cert_names", sa.Text, nullable=True),  # JSON list, as installed or served
    sa.Column("not_before", UtcDateTime(), nullable=True),
    sa.Column("not_after", UtcDateTime(), nullable=True),
    sa.Column("last_attempt_at", UtcDateTime(), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("failing_since", UtcDateTime(), nullable=True),
    sa.Column("next_renewal_at", UtcDateTime(), nullable=True),
    sa.Column("observed_at", UtcDateTime(), nullable=True),
    sa.Column("config_version", sa.Integer, nullable=True),
    sa.Column("deadline", UtcDateTime(), nullable=True),
    sa.Column("grace_seconds", sa.Integer, nullable=True),
    sa.Column("withdrawn_at", UtcDateTime(), nullable=True),
)

# Findings: at most one open row per key (kind and subject); resolved rows stay as
# history. alerted_at is the last delivered open/reminder alert; resolve_due marks a
# resolved finding whose resolution is still to be sent (it was alerted when open);
# closed_as says how it was closed: "resolved", or "withdrawn" (its expectation was
# removed from the configuration).
monitor_findings = sa.Table(
    "monitor_findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(600), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),  # when the problem began
    sa.Column("opened_at", UtcDateTime(), nullable=False),
    sa.Column("resolved_at", UtcDateTime(), nullable=True, index=True),
    sa.Column("alerted_at", UtcDateTime(), nullable=True),
    sa.Column("resolve_due", sa.Boolean, nullable=False, default=False, index=True),
    sa.Column("closed_as", sa.String(16), nullable=True),
    sa.Index("uq_monitor_findings_open_key", "key", unique=True,
             sqlite_where=sa.text("resolved_at IS NULL"),
             postgresql_where=sa.text("resolved_at IS NULL")),
)
