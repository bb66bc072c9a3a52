"""The monitor's rows in the store: check-in tokens, agents, expectations, findings.

Everything goes through ``Store.read()`` and ``Store.state_write()`` (the monitor writes
no audit record except for tokens, which are credentials: those use ``Store.write()``).
Races between two evaluators (the server's loop and ``monitor check``) are settled by
the write lock every ``state_write`` takes: the second sees the first one's findings and
the alerts it claimed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind, not_found
from certwright.monitor.model import (
    AgentRecord,
    Expectation,
    Finding,
    IssuedCert,
    PendingRequest,
    StoredFinding,
    severity_rank,
)
from certwright.store import schema
from certwright.store.repo import Store

if TYPE_CHECKING:
    from certwright.monitor.checkin import CheckIn

__all__ = ["AlertEvent", "MonitorState", "hash_token", "new_token"]

TOKEN_PREFIX = "cwm_"  # noqa: S105 (a prefix, not a secret)
_T = schema.monitor_tokens.c
_A = schema.monitor_agents.c
_E = schema.monitor_expectations.c
_F = schema.monitor_findings.c
_C = schema.certificates.c


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hash_token(token: str, salt: bytes | None = None) -> str:
    """``hmac-sha256$SALT$HASH``. The token is 256 random bits, so one keyed hash is as
    strong as a slow KDF would be (there is no small space of guesses to slow down)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hmac.new(salt, token.encode(), hashlib.sha256).digest()
    return f"hmac-sha256${_b64(salt)}${_b64(digest)}"


def _check_token(token: str, stored: str) -> bool:
    try:
        algo, salt, _ = stored.split("$")
        raw_salt = base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4))
    except ValueError:
        return False
    return algo == "hmac-sha256" and hmac.compare_digest(hash_token(token, raw_salt), stored)


# For an unknown host the same work is done against this, so the answer takes as long.
_DUMMY = hash_token("x" * 47)


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    event: str  # open | reminder | resolved
    finding: StoredFinding
    previous_alerted_at: dt.datetime | None = None


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _expectation(row: Any) -> Expectation:
    return Expectation(
        key=row.key, source=row.source, host=row.host, names=tuple(json.loads(row.names)),
        first_seen=row.first_seen, spec=row.spec, profile=row.profile, issuer=row.issuer,
        serial=row.serial, cert_names=_names(row.cert_names), not_before=row.not_before,
        not_after=row.not_after, last_attempt_at=row.last_attempt_at,
        last_error=row.last_error, failing_since=row.failing_since,
        next_renewal_at=row.next_renewal_at, observed_at=row.observed_at)


def _finding(row: Any) -> StoredFinding:
    return StoredFinding(id=row.id, kind=row.kind, severity=row.severity, subject=row.subject,
                         host=row.host, message=row.message, since=row.since,
                         opened_at=row.opened_at, resolved_at=row.resolved_at,
                         alerted_at=row.alerted_at)


# Statements built once (SQLAlchemy finds their compiled form in its cache).
_CERT_COLUMNS = sa.select(_C.serial, _C.profile, _C.names, _C.not_before, _C.not_after,
                          _C.issued_at, _C.revoked_at)
_RAW = sa.types.NullType()  # no result processing
_OPEN = sa.select(schema.monitor_findings).where(_F.resolved_at.is_(None))


class MonitorState:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- tokens --------------------------------------------------------------------------

    def add_token(self, host: str, *, actor: str, replace: bool = False) -> str:
        """A new bearer token for ``host``; only its hash is kept. Printed once."""
        token = new_token()
        now = self.clock.now()
        with self.store.write() as conn:
            exists = conn.execute(sa.select(_T.host).where(_T.host == host)).first()
            if exists and not replace:
                raise CertwrightError(ErrorKind.CONFLICT,
                                      f"host {host!r} has a token; --replace makes a new one")
            if exists:
                conn.execute(schema.monitor_tokens.update().where(_T.host == host)
                             .values(secret=hash_token(token), created_at=now))
            else:
                conn.execute(schema.monitor_tokens.insert().values(
                    host=host, secret=hash_token(token), created_at=now))
            self.store.append_audit(conn, "monitor.token.added", actor=actor, subject=host,
                                    at=now, data={"replaced": bool(exists)})
        return token

    def remove_token(self, host: str, *, actor: str) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            if conn.execute(schema.monitor_tokens.delete().where(_T.host == host)
                            ).rowcount == 0:
                raise not_found(f"host {host!r} has no token")
            self.store.append_audit(conn, "monitor.token.removed", actor=actor, subject=host,
                                    at=now, data={})

    def token_hosts(self) -> list[tuple[str, dt.datetime]]:
        with self.store.read() as conn:
            return [(r.host, r.created_at) for r in conn.execute(
                sa.select(_T.host, _T.created_at).order_by(_T.host))]

    def authenticate(self, host: str, token: str) -> None:
        """Raise CertwrightError(UNAUTHORIZED) unless ``token`` is ``host``'s."""
        with self.store.read() as conn:
            stored = conn.execute(sa.select(_T.secret).where(_T.host == host)).scalar()
        ok = _check_token(token, stored if stored is not None else _DUMMY)
        if stored is None or not ok:
            raise CertwrightError(ErrorKind.UNAUTHORIZED,
                                  "the token is not valid for this host")

    # -- check-ins -----------------------------------------------------------------------

    def record_checkin(self, report: CheckIn, token: str) -> None:
        """Authenticate, then replace the host's reported specs with ``report``'s."""
        self.authenticate(report.host, token)
        now = self.clock.now()
        host = report.host
        with self.store.state_write() as conn:
            agent = {"agent_version": report.agent_version,
                     "interval_seconds": report.checkin_interval, "checked_in_at": now}
            if conn.execute(schema.monitor_agents.update().where(_A.host == host)
                            .values(**agent)).rowcount == 0:
                conn.execute(schema.monitor_agents.insert().values(host=host, first_seen=now,
                                                                   **agent))
            known = {r.key: r.first_seen for r in conn.execute(
                sa.select(_E.key, _E.first_seen).where(_E.host == host, _E.source == "agent"))}
            rows = []
            for s in report.specs:
                cert = s.certificate
                attempt = s.last_attempt
                failed = attempt is not None and not attempt.ok
                key = f"agent:{host}/{s.name}"
                rows.append({
                    "key": key, "source": "agent", "host": host, "spec": s.name,
                    "profile": s.profile, "issuer": s.issuer, "names": json.dumps(s.names),
                    "first_seen": known.pop(key, now),
                    "serial": cert.serial if cert else None,
                    "cert_names": json.dumps(cert.names) if cert and cert.names else None,
                    "not_before": cert.not_before if cert else None,
                    "not_after": cert.not_after if cert else None,
                    "last_attempt_at": attempt.at if attempt else None,
                    "last_error": (attempt.error or "failed") if failed and attempt else None,
                    "failing_since": (s.failing_since or (attempt.at if attempt else None))
                    if failed else None,
                    "next_renewal_at": s.renewal.next_at if s.renewal else None,
                    "observed_at": now,
                })
            conn.execute(schema.monitor_expectations.delete().where(
                _E.host == host, _E.source == "agent"))
            if rows:
                conn.execute(schema.monitor_expectations.insert(), rows)

    def agents(self) -> list[AgentRecord]:
        with self.store.read() as conn:
            return [AgentRecord(r.host, r.agent_version, r.interval_seconds, r.checked_in_at,
                                r.first_seen)
                    for r in conn.execute(sa.select(schema.monitor_agents))]

    # -- expectations --------------------------------------------------------------------

    def expectations(self) -> list[Expectation]:
        with self.store.read() as conn:
            return [_expectation(r) for r in conn.execute(
                sa.select(schema.monitor_expectations))]

    def sync_declared(self, declared: Sequence[Expectation]) -> list[Expectation]:
        """Make the stored declared/endpoint expectations those of the configuration:
        insert new ones (first seen now), delete withdrawn ones, keep the rest (and
        when they were first seen). Returns every stored expectation."""
        wanted = {e.key: e for e in declared}
        with self.store.state_write() as conn:
            rows = {r.key: r for r in conn.execute(sa.select(schema.monitor_expectations))}
            gone = [k for k, r in rows.items() if r.source != "agent" and k not in wanted]
            new = [e for k, e in wanted.items() if k not in rows]
            changed = [e for k, e in wanted.items()
                       if k in rows and (json.loads(rows[k].names) != list(e.names)
                                         or rows[k].profile != e.profile
                                         or rows[k].host != e.host)]
            if gone:
                conn.execute(schema.monitor_expectations.delete().where(_E.key.in_(
                    sa.bindparam("keys", expanding=True))), {"keys": gone})
            if new:
                conn.execute(schema.monitor_expectations.insert(), [{
                    "key": e.key, "source": e.source, "host": e.host, "spec": None,
                    "profile": e.profile, "issuer": None, "names": json.dumps(e.names),
                    "first_seen": e.first_seen} for e in new])
            if changed:
                conn.execute(schema.monitor_expectations.update()
                             .where(_E.key == sa.bindparam("k"))
                             .values(names=sa.bindparam("n"), profile=sa.bindparam("p"),
                                     host=sa.bindparam("h")),
                             [{"k": e.key, "n": json.dumps(e.names), "p": e.profile,
                               "h": e.host} for e in changed])
            kept = {k: _expectation(r) for k, r in rows.items() if k not in gone}
        for e in new:
            kept[e.key] = e
        for e in changed:
            kept[e.key] = dataclasses.replace(kept[e.key], names=e.names, profile=e.profile,
                                              host=e.host)
        return list(kept.values())

    def record_observations(self, observed: Iterable[tuple[str, IssuedCert | None,
                                                           tuple[str, ...] | None]],
                            now: dt.datetime) -> None:
        """What the evaluation found for declared/endpoint expectations: the certificate
        (issued, or served) and, for endpoints, the names it carries."""
        params = [{"k": key, "serial": c.serial if c else None,
                   "nb": c.not_before if c else None, "na": c.not_after if c else None,
                   "cn": json.dumps(sorted(names)) if names is not None else None, "at": now}
                  for key, c, names in observed]
        if not params:
            return
        with self.store.state_write() as conn:
            conn.execute(schema.monitor_expectations.update()
                         .where(_E.key == sa.bindparam("k"))
                         .values(serial=sa.bindparam("serial"), not_before=sa.bindparam("nb"),
                                 not_after=sa.bindparam("na"), cert_names=sa.bindparam("cn"),
                                 observed_at=sa.bindparam("at")), params)

    # -- what the CA did -----------------------------------------------------------------

    def issued_keys(self, profiles: Iterable[str]) -> Iterator[tuple[str, str, str, Any, bool]]:
        """(serial, profile, names JSON, issued_at as the driver returns it, revoked) of
        every certificate of ``profiles``: the lean form the index is built from (the
        times are compared raw: fixed-width UTC text on SQLite, timestamps on PostgreSQL,
        so a 100,000-row scan converts nothing)."""
        q = sa.select(_C.serial, _C.profile, _C.names, sa.type_coerce(_C.issued_at, _RAW),
                      _C.revoked_at.is_not(None)).where(_C.profile.in_(sorted(set(profiles))))
        with self.store.read() as conn:
            for r in conn.execute(q):
                yield (r[0], r[1], r[2], r[3], r[4])

    def certificates(self, serials: Iterable[str]) -> dict[str, IssuedCert]:
        wanted = sorted(set(serials))
        out: dict[str, IssuedCert] = {}
        with self.store.read() as conn:
            for i in range(0, len(wanted), 500):
                for r in conn.execute(_CERT_COLUMNS.where(_C.serial.in_(wanted[i:i + 500]))):
                    out[r.serial] = IssuedCert(r.serial, r.profile,
                                               frozenset(json.loads(r.names)), r.not_before,
                                               r.not_after, r.issued_at,
                                               r.revoked_at is not None)
        return out

    def pending_requests(self) -> list[PendingRequest]:
        rc = schema.requests.c
        with self.store.read() as conn:
            return [PendingRequest(r.id, r.profile, r.requester, tuple(json.loads(r.names)),
                                   r.created_at)
                    for r in conn.execute(sa.select(rc.id, rc.profile, rc.requester, rc.names,
                                                    rc.created_at)
                                          .where(rc.state == "pending"))]

    # -- findings ------------------------------------------------------------------------

    def open_findings(self) -> list[StoredFinding]:
        with self.store.read() as conn:
            return [_finding(r) for r in conn.execute(_OPEN.order_by(_F.id))]

    def findings(self, ids: Iterable[int]) -> list[StoredFinding]:
        with self.store.read() as conn:
            return [_finding(r) for r in conn.execute(
                sa.select(schema.monitor_findings).where(_F.id.in_(list(ids))).order_by(_F.id))]

    def reconcile(self, current: Sequence[Finding], now: dt.datetime, *,
                  reminder: dt.timedelta, min_severity: str, claim: bool = True,
                  ) -> list[AlertEvent]:
        """Open new findings, update changed ones, resolve the ones no longer found; with
        ``claim``, mark the alerts due (open, reminder, resolved) as sent and return them:
        the caller sends them after the commit, and calls ``unclaim`` for those that could
        not be delivered. Escalation (a higher severity) alerts like an opening."""
        by_key = {f.key: f for f in current}
        floor = severity_rank(min_severity)
        events: list[AlertEvent] = []
        with self.store.state_write() as conn:
            open_rows = {r.key: r for r in conn.execute(_OPEN)}
            inserts = [{"key": k, "kind": f.kind, "severity": f.severity,
                        "subject": f.subject, "host": f.host, "message": f.message,
                        "since": f.since, "opened_at": now, "resolved_at": None,
                        "alerted_at": None, "resolve_due": False}
                       for k, f in by_key.items() if k not in open_rows]
            if inserts:
                conn.execute(schema.monitor_findings.insert(), inserts)
            updates = []
            for k, row in open_rows.items():
                f = by_key.get(k)
                if f is None or (f.severity == row.severity and f.message == row.message):
                    continue
                escalated = severity_rank(f.severity) > severity_rank(row.severity)
                updates.append({"i": row.id, "s": f.severity, "m": f.message,
                                "a": None if escalated else row.alerted_at})
            if updates:
                conn.execute(schema.monitor_findings.update().where(_F.id == sa.bindparam("i"))
                             .values(severity=sa.bindparam("s"), message=sa.bindparam("m"),
                                     alerted_at=sa.bindparam("a")), updates)
            resolved = [{"i": r.id, "due": r.alerted_at is not None}
                        for k, r in open_rows.items() if k not in by_key]
            if resolved:
                conn.execute(schema.monitor_findings.update().where(_F.id == sa.bindparam("i"))
                             .values(resolved_at=now, resolve_due=sa.bindparam("due")),
                             resolved)
            if not claim:
                return []
            for r in conn.execute(_OPEN):
                if severity_rank(r.severity) < floor:
                    continue
                if r.alerted_at is None:
                    events.append(AlertEvent("open", _finding(r), None))
                elif reminder > dt.timedelta(0) and r.alerted_at + reminder <= now:
                    events.append(AlertEvent("reminder", _finding(r), r.alerted_at))
            opened = [e.finding.id for e in events]
            if opened:
                conn.execute(schema.monitor_findings.update().where(_F.id.in_(opened))
                             .values(alerted_at=now))
            due = conn.execute(sa.select(schema.monitor_findings).where(
                _F.resolve_due.is_(True))).all()
            if due:
                conn.execute(schema.monitor_findings.update().where(
                    _F.id.in_([r.id for r in due])).values(resolve_due=False))
                events += [AlertEvent("resolved", _finding(r), r.alerted_at) for r in due]
        return events

    def unclaim(self, events: Sequence[AlertEvent]) -> None:
        """Alerts that were not delivered: due again at the next evaluation."""
        with self.store.state_write() as conn:
            for e in events:
                if e.event == "resolved":
                    conn.execute(schema.monitor_findings.update().where(_F.id == e.finding.id)
                                 .values(resolve_due=True))
                else:
                    conn.execute(schema.monitor_findings.update().where(
                        _F.id == e.finding.id, _F.resolved_at.is_(None))
                        .values(alerted_at=e.previous_alerted_at))
