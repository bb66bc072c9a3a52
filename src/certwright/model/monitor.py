"""The monitor's domain objects (frozen dataclasses; the store maps rows to them): what
is expected, what agents report, what the evaluation found, what metrics count."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

__all__ = ["KINDS", "SEVERITIES", "AgentCheckIn", "AgentRecord", "AlertEvent", "Expectation",
           "Finding", "IssuedCert", "MetricsSnapshot", "PendingRequest", "Probe",
           "ReportedSpec", "StoredFinding", "severity_rank"]

SEVERITIES = ("info", "warning", "critical")
KINDS = ("missing", "renewal-failing", "expiring", "expired", "name-mismatch",
         "stale-deployment", "agent-silent", "pending-approval-stuck")
Source = Literal["agent", "declared", "endpoint"]


def severity_rank(severity: str) -> int:
    """``info`` < ``warning`` < ``critical``; raises ValueError for anything else."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"{severity!r} is not a severity ({', '.join(SEVERITIES)})") from None


@dataclasses.dataclass(frozen=True)
class Expectation:
    """One certificate that must exist, and what was last observed of it."""

    key: str
    source: str  # agent | declared | endpoint
    host: str
    names: tuple[str, ...]
    first_seen: dt.datetime
    spec: str | None = None
    profile: str | None = None
    issuer: str | None = None
    serial: str | None = None
    cert_names: tuple[str, ...] | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    last_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    failing_since: dt.datetime | None = None
    next_renewal_at: dt.datetime | None = None
    observed_at: dt.datetime | None = None
    # declared/endpoint: the deadline or grace the declaring configuration set, so
    # evaluators holding other configurations judge it alike.
    deadline: dt.datetime | None = None
    grace: dt.timedelta | None = None


@dataclasses.dataclass(frozen=True)
class AgentRecord:
    host: str
    agent_version: str
    interval_seconds: int | None
    checked_in_at: dt.datetime
    first_seen: dt.datetime


@dataclasses.dataclass(frozen=True)
class IssuedCert:
    """The columns of an issued certificate the evaluation needs (no DER)."""

    serial: str
    profile: str
    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    revoked: bool = False


@dataclasses.dataclass(frozen=True)
class PendingRequest:
    id: str
    profile: str
    requester: str
    names: tuple[str, ...]
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a TLS endpoint served: the leaf's serial, names and validity, or an error."""

    serial: str | None = None
    names: tuple[str, ...] = ()
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    issued_by_us: bool = False  # the leaf's signature verifies with our issuing CA key
    issuer: str = ""
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Finding:
    """A problem the evaluation found: what, how bad, about which expectation, since
    when, in one sentence."""

    kind: str
    severity: str
    subject: str  # the expectation key, "agent:HOST" or "request:ID"
    host: str | None
    message: str
    since: dt.datetime

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.subject}"


@dataclasses.dataclass(frozen=True)
class StoredFinding:
    id: int
    kind: str
    severity: str
    subject: str
    host: str | None
    message: str
    since: dt.datetime
    opened_at: dt.datetime
    resolved_at: dt.datetime | None
    alerted_at: dt.datetime | None
    # How it was closed: "resolved" (the problem went away) or "withdrawn" (the
    # operator removed its expectation from the configuration; nothing was fixed).
    closed_as: str | None = None

    def as_json(self) -> dict[str, object]:
        def ts(t: dt.datetime | None) -> str | None:
            return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None

        return {"id": self.id, "kind": self.kind, "severity": self.severity,
                "subject": self.subject, "host": self.host, "message": self.message,
                "since": ts(self.since), "opened_at": ts(self.opened_at),
                "resolved_at": ts(self.resolved_at), "closed_as": self.closed_as}


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    event: str  # open | reminder | resolved | withdrawn
    finding: StoredFinding
    previous_alerted_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class ReportedSpec:
    """One spec as its agent reported it, in the store's terms (names ``type:value``;
    ``last_error`` set only when the last attempt failed)."""

    name: str
    names: tuple[str, ...]
    profile: str | None = None
    issuer: str | None = None
    serial: str | None = None
    cert_names: tuple[str, ...] | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    last_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    failing_since: dt.datetime | None = None
    next_renewal_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class AgentCheckIn:
    """An authenticated check-in: the host's reported specs replace the ones it had."""

    host: str
    agent_version: str
    interval_seconds: int | None
    specs: tuple[ReportedSpec, ...]


@dataclasses.dataclass(frozen=True)
class MetricsSnapshot:
    """The counts ``/metrics`` reports, read in one transaction.

    ``rejected`` holds the (protocol, profile, kind) of each ``request.rejected`` audit
    record after the sequence number asked for, up to ``audit_seq``: the caller tallies
    the log incrementally instead of reading it whole at every scrape."""

    issued: tuple[tuple[str, str, int], ...]  # (protocol, profile, n)
    requests: tuple[tuple[str, str, str, int], ...]  # (protocol, profile, state, n)
    revoked: tuple[tuple[str, int], ...]  # (profile, n)
    by_expiry: tuple[int, ...]  # expired, then one per edge interval, then beyond the last
    open_findings: tuple[tuple[str, str, int], ...]  # (kind, severity, n)
    # (key, host, profile, source, not_after) of each expectation that holds a certificate
    expected: tuple[tuple[str, str, str | None, str, dt.datetime], ...]
    audit_seq: int
    rejected: tuple[tuple[str, str, str], ...]
