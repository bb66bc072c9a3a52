"""The monitor's rows: check-in tokens, agents, expectations, findings, and the counts
``/metrics`` reads (from the CA's tables as well as the monitor's).

Everything goes through ``Store.read()`` and ``Store.state_write()`` (the monitor writes
no audit record except for tokens, which are credentials: those use ``Store.write()``,
so the token and its audit record commit together). Races between two evaluators (the
server's loop and ``monitor check``) are settled by the write lock every ``state_write``
takes: the second sees the first one's findings and the alerts it claimed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind, not_found
from certwright.model.monitor import (
    AgentCheckIn,
    AgentRecord,
    AlertEvent,
    Expectation,
    Finding,
    IssuedCert,
    MetricsSnapshot,
    PendingRequest,
    StoredFinding,
    severity_rank,
)
from certwright.store import repositories, schema
from certwright.store.repo import Store

__all__ = ["MonitorRepository"]

_T = schema.monitor_tokens.c
_A = schema.monitor_agents.c
_E = schema.monitor_expectations.c
_F = schema.monitor_findings.c
_C = schema.certificates.c
_R = schema.requests.c
_L = schema.audit_log.c


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _expectation(row: Any) -> Expectation:
    return Expectation(
        key=row.key, source=row.source, host=row.host, names=tuple(json.loads(row.names)),
        first_seen=row.first_seen, spec=row.spec, profile=row.profile, issuer=row.issuer,
        serial=row.serial, cert_names=_names(row.cert_names), not_before=row.not_before,
        not_after=row.not_after, last_attempt_at=row.last_attempt_at,
        last_error=row.last_error, failing_since=row.failing_since,
        next_renewal_at=row.next_renewal_at, observed_at=row.observed_at,
        deadline=row.deadline,
        grace=None if row.grace_seconds is None else dt.timedelta(seconds=row.grace_seconds))


def _declared_values(e: Expectation) -> dict[str, Any]:
    """What a configuration declares of a declared/endpoint expectation, as parameters."""
    return {"n": json.dumps(list(e.names)), "p": e.profile, "h": e.host,
            "d": e.deadline,
            "g": None if e.grace is None else int(e.grace.total_seconds())}


def _declared_columns(e: Expectation) -> dict[str, Any]:
    v = _declared_values(e)
    return {"names": v["n"], "profile": v["p"], "host": v["h"], "deadline": v["d"],
            "grace_seconds": v["g"]}


def _finding(row: Any) -> StoredFinding:
    return StoredFinding(id=row.id, kind=row.kind, severity=row.severity, subject=row.subject,
                         host=row.host, message=row.message, since=row.since,
                         opened_at=row.opened_at, resolved_at=row.resolved_at,
                         alerted_at=row.alerted_at, closed_as=row.closed_as)


# Statements built once (SQLAlchemy finds their compiled form in its cache).
_CERT_COLUMNS = sa.select(_C.serial, _C.profile, _C.names, _C.not_before, _C.not_after,
                          _C.issued_at, _C.revoked_at)
_RAW = sa.types.NullType()  # no result processing
_OPEN = sa.select(schema.monitor_findings).where(_F.resolved_at.is_(None))
# "VERSION SHA256" of the last monitor configuration an evaluator registered.
_CONFIG_SETTING = "monitor_config"


class MonitorRepository:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- tokens (only their hashes: the monitor hashes and checks them) ------------------

    def add_token(self, host: str, secret: str, *, actor: str, replace: bool) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            exists = conn.execute(sa.select(_T.host).where(_T.host == host)).first()
            if exists and not replace:
                raise CertwrightError(ErrorKind.CONFLICT,
                                      f"host {host!r} has a token; --replace makes a new one")
            if exists:
                conn.execute(schema.monitor_tokens.update().where(_T.host == host)
                             .values(secret=secret, created_at=now))
            else:
                conn.execute(schema.monitor_tokens.insert().values(
                    host=host, secret=secret, created_at=now))
            self.store.append_audit(conn, "monitor.token.added", actor=actor, subject=host,
                                    at=now, data={"replaced": bool(exists)})

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

    def token_secret(self, host: str) -> str | None:
        with self.store.read() as conn:
            secret: str | None = conn.execute(
                sa.select(_T.secret).where(_T.host == host)).scalar()
        return secret

    # -- check-ins -----------------------------------------------------------------------

    def record_checkin(self, report: AgentCheckIn) -> None:
        """Replace the host's reported specs with ``report``'s (keeping when each spec
        was first seen) and note the check-in."""
        now = self.clock.now()
        host = report.host
        with self.store.state_write() as conn:
            agent = {"agent_version": report.agent_version,
                     "interval_seconds": report.interval_seconds, "checked_in_at": now}
            if conn.execute(schema.monitor_agents.update().where(_A.host == host)
                            .values(**agent)).rowcount == 0:
                conn.execute(schema.monitor_agents.insert().values(host=host, first_seen=now,
                                                                   **agent))
            known = {r.key: r.first_seen for r in conn.execute(
                sa.select(_E.key, _E.first_seen).where(_E.host == host, _E.source == "agent"))}
            rows = []
            for s in report.specs:
                key = f"agent:{host}/{s.name}"
                rows.append({
                    "key": key, "source": "agent", "host": host, "spec": s.name,
                    "profile": s.profile, "issuer": s.issuer, "names": json.dumps(s.names),
                    "first_seen": known.pop(key, now), "serial": s.serial,
                    "cert_names": json.dumps(s.cert_names) if s.cert_names else None,
                    "not_before": s.not_before, "not_after": s.not_after,
                    "last_attempt_at": s.last_attempt_at, "last_error": s.last_error,
                    "failing_since": s.failing_since, "next_renewal_at": s.next_renewal_at,
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
                sa.select(schema.monitor_expectations).where(_E.withdrawn_at.is_(None)))]

    def register_config(self, digest: str) -> int:
        """The version of the monitor configuration with this ``digest``: the version of
        the last one registered if it is the same, else the next one. Evaluators register
        when they load their configuration, so a higher version is a configuration read
        later (the order the audit log gives ``config.changed``)."""
        with self.store.state_write() as conn:
            last = self.store.setting(_CONFIG_SETTING, conn)
            version, _, known = (last or "0 ").partition(" ")
            if known == digest:
                return int(version)
            self.store.put_setting(conn, _CONFIG_SETTING, f"{int(version) + 1} {digest}")
            return int(version) + 1

    def sync_declared(self, declared: Sequence[Expectation], version: int,
                      now: dt.datetime) -> list[Expectation]:
        """Make the stored declared/endpoint expectations those of a configuration of
        ``version``, where it is at least as new as the one that last declared or
        withdrew each: insert new ones (first seen now), withdraw the ones it no longer
        declares (the row stays, marked), update changed ones and keep when they were
        first seen. A row a newer configuration spoke of is left as it is. Returns every
        expectation in force (withdrawn ones left out)."""
        wanted = {e.key: e for e in declared}
        with self.store.state_write() as conn:
            rows = {r.key: r for r in conn.execute(sa.select(schema.monitor_expectations))}
            new, updates = [], []
            for k, r in rows.items():
                if r.source == "agent" or (r.config_version or 0) > version:
                    continue
                e = wanted.get(k)
                if e is None:
                    if r.withdrawn_at is None:
                        updates.append({"k": k, "w": now, "v": version,
                                        **_declared_values(_expectation(r))})
                    continue
                fresh = r.withdrawn_at is not None  # declared again: a new declaration
                current = _expectation(r)
                if fresh or r.config_version != version or _declared_values(
                        current) != _declared_values(e):
                    updates.append({"k": k, "w": None, "v": version,
                                    **_declared_values(e)})
                    if fresh:
                        new.append(e)
            inserts = [e for k, e in wanted.items() if k not in rows]
            if inserts:
                conn.execute(schema.monitor_expectations.insert(), [{
                    "key": e.key, "source": e.source, "host": e.host, "spec": None,
                    "issuer": None, "first_seen": e.first_seen, "config_version": version,
                    **_declared_columns(e)} for e in inserts])
            if new:
                conn.execute(schema.monitor_expectations.update()
                             .where(_E.key == sa.bindparam("k"))
                             .values(first_seen=sa.bindparam("f"), serial=None,
                                     cert_names=None, not_before=None, not_after=None,
                                     observed_at=None),
                             [{"k": e.key, "f": e.first_seen} for e in new])
            if updates:
                conn.execute(schema.monitor_expectations.update()
                             .where(_E.key == sa.bindparam("k"))
                             .values(withdrawn_at=sa.bindparam("w"),
                                     config_version=sa.bindparam("v"),
                                     names=sa.bindparam("n"), profile=sa.bindparam("p"),
                                     host=sa.bindparam("h"), deadline=sa.bindparam("d"),
                                     grace_seconds=sa.bindparam("g")), updates)
            return [_expectation(r) for r in conn.execute(
                sa.select(schema.monitor_expectations).where(_E.withdrawn_at.is_(None)))]

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

    # -- what the CA did (read in bulk: one query, not one per expectation) -------------

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
        with self.store.read() as conn:
            return [PendingRequest(r.id, r.profile, r.requester, tuple(json.loads(r.names)),
                                   r.created_at)
                    for r in conn.execute(sa.select(_R.id, _R.profile, _R.requester, _R.names,
                                                    _R.created_at)
                                          .where(_R.state == "pending"))]

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
                  judged: Collection[str] = ()) -> list[AlertEvent]:
        """Open new findings, update changed ones, resolve the ones no longer found; with
        ``claim``, mark the alerts due (open, reminder, resolved, withdrawn) as sent and
        return them: the caller sends them after the commit, and calls ``unclaim`` for
        those that could not be delivered. Escalation (a higher severity) alerts like an
        opening.

        Declared/endpoint expectations as they stand now, not as the evaluation saw them:
        the findings of a withdrawn one are closed as withdrawn (not resolved), and those
        of one in force that this evaluation did not judge (``judged`` holds the keys it
        did: it started before the expectation was declared, or could not probe it) are
        left as they are."""
        floor = severity_rank(min_severity)
        events: list[AlertEvent] = []
        with self.store.state_write() as conn:
            withdrawn: set[str] = set()
            unjudged: set[str] = set()
            for key, gone in conn.execute(sa.select(_E.key, _E.withdrawn_at)
                                          .where(_E.source != "agent")):
                if gone is not None:
                    withdrawn.add(key)
                elif key not in judged:
                    unjudged.add(key)
            by_key = {f.key: f for f in current
                      if f.subject not in withdrawn and f.subject not in unjudged}
            open_rows = {r.key: r for r in conn.execute(_OPEN)
                         if r.subject not in unjudged}
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
            resolved = [{"i": r.id, "due": r.alerted_at is not None,
                         "as": "withdrawn" if r.subject in withdrawn else "resolved"}
                        for k, r in open_rows.items() if k not in by_key]
            if resolved:
                conn.execute(schema.monitor_findings.update().where(_F.id == sa.bindparam("i"))
                             .values(resolved_at=now, resolve_due=sa.bindparam("due"),
                                     closed_as=sa.bindparam("as")),
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
                events += [AlertEvent(r.closed_as or "resolved", _finding(r), r.alerted_at)
                           for r in due]
        return events

    def unclaim(self, events: Sequence[AlertEvent]) -> None:
        """Alerts that were not delivered: due again at the next evaluation."""
        with self.store.state_write() as conn:
            for e in events:
                if e.event in ("resolved", "withdrawn"):
                    conn.execute(schema.monitor_findings.update().where(_F.id == e.finding.id)
                                 .values(resolve_due=True))
                else:
                    conn.execute(schema.monitor_findings.update().where(
                        _F.id == e.finding.id, _F.resolved_at.is_(None))
                        .values(alerted_at=e.previous_alerted_at))

    # -- metrics -------------------------------------------------------------------------

    def metrics(self, now: dt.datetime, expiry_edges: Sequence[dt.timedelta],
                rejected_after: int) -> MetricsSnapshot:
        """Every count ``/metrics`` reports, in one read transaction: aggregates only,
        whatever the size of the tables (``rejected`` reads only the audit records
        appended after ``rejected_after``; the audit log is append-only and its sequence
        numbers are given out under the write lock, so commit order is seq order)."""
        edges = [dt.timedelta(0), *expiry_edges]
        buckets = [sa.func.sum(sa.case((_C.not_after <= now, 1), else_=0))]
        buckets += [sa.func.sum(sa.case((sa.and_(_C.not_after > now + lo,
                                                 _C.not_after <= now + hi), 1), else_=0))
                    for lo, hi in itertools.pairwise(edges)]
        buckets.append(sa.func.sum(sa.case((_C.not_after > now + edges[-1], 1), else_=0)))
        with self.store.read() as conn:
            top = conn.execute(sa.select(sa.func.max(_L.seq))).scalar() or 0
            rejected = []
            for (text,) in conn.execute(sa.select(_L.data).where(
                    _L.seq > rejected_after, _L.seq <= top, _L.event == "request.rejected")):
                data = json.loads(text)
                protocol = data.get("protocol")
                if protocol is None:
                    continue  # an operator's rejection: counted from the requests table
                rejected.append((str(protocol), str(data.get("profile")),
                                 str(data.get("kind") or "unknown")))
            issued = conn.execute(sa.select(_C.protocol, _C.profile, sa.func.count())
                                  .group_by(_C.protocol, _C.profile)).all()
            held = conn.execute(sa.select(_R.protocol, _R.profile, _R.state, sa.func.count())
                                .group_by(_R.protocol, _R.profile, _R.state)).all()
            revoked = conn.execute(sa.select(_C.profile, sa.func.count())
                                   .where(_C.revoked_at.is_not(None))
                                   .group_by(_C.profile)).all()
            by_expiry = conn.execute(sa.select(*buckets).where(_C.revoked_at.is_(None))).one()
            findings = conn.execute(sa.select(_F.kind, _F.severity, sa.func.count())
                                    .where(_F.resolved_at.is_(None))
                                    .group_by(_F.kind, _F.severity)).all()
            expected = conn.execute(sa.select(_E.key, _E.host, _E.profile, _E.source,
                                              _E.not_after)
                                    .where(_E.not_after.is_not(None),
                                           _E.withdrawn_at.is_(None))).all()
        return MetricsSnapshot(
            issued=tuple((p, f, n) for p, f, n in issued),
            requests=tuple((p, f, s, n) for p, f, s, n in held),
            revoked=tuple((f, n) for f, n in revoked),
            by_expiry=tuple(n or 0 for n in by_expiry),
            open_findings=tuple((k, s, n) for k, s, n in findings),
            expected=tuple((k, h, p, s, t) for k, h, p, s, t in expected),
            audit_seq=top, rejected=tuple(rejected))


repositories.register("monitor", MonitorRepository)
