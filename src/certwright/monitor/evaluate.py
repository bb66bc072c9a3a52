"""The evaluation: expectations against observations, as findings. Pure: the caller
gathers the snapshot (store, check-ins, probes) and passes the time.

Cost: one pass over the issued certificates to index them, then constant work per
expectation, agent and pending request, so it grows linearly with each.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from certwright.model.monitor import (
    AgentRecord,
    Expectation,
    Finding,
    IssuedCert,
    PendingRequest,
    Probe,
)
from certwright.monitor.config import ExpiryThresholds, MonitorSettings

__all__ = ["CertIndex", "Evaluation", "declared_expectations", "evaluate"]

DEFAULT_SEVERITY = {
    "missing": "critical",
    "renewal-failing": "warning",
    "expired": "critical",
    "name-mismatch": "warning",
    "stale-deployment": "warning",
    "agent-silent": "warning",
    "pending-approval-stuck": "warning",
}


def _ts(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(d: dt.timedelta) -> str:
    s = int(d.total_seconds())
    if s >= 2 * 86400:
        return f"{s // 86400} days"
    if s >= 2 * 3600:
        return f"{s // 3600} hours"
    if s >= 120:
        return f"{s // 60} minutes"
    return f"{s} seconds"


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _names_json(text: str) -> frozenset[str]:
    """The store's names column (``json.dumps`` of a list of strings). Without an escape
    in it, it is split directly: a third of the time of ``json.loads`` over 100,000
    certificates."""
    if "\\" in text or not text.startswith('["'):
        return frozenset(json.loads(text))
    return frozenset(text[2:-2].split('", "'))


class CertIndex:
    """For each expected (profile, names): the newest unrevoked certificate with exactly
    those names, and the newest with any of them; plus certificates looked up by serial
    (what endpoints serve)."""

    def __init__(self, certs: Iterable[IssuedCert] = ()) -> None:
        self.by_serial: dict[str, IssuedCert] = {}
        self._exact: dict[tuple[str, frozenset[str]], IssuedCert] = {}
        self._by_name: dict[tuple[str, str], IssuedCert] = {}
        for c in certs:
            self.by_serial[c.serial] = c
            if c.revoked:
                continue
            k = (c.profile, c.names)
            old = self._exact.get(k)
            if old is None or (old.issued_at, old.serial) < (c.issued_at, c.serial):
                self._exact[k] = c
            for n in c.names:
                old = self._by_name.get((c.profile, n))
                if old is None or (old.issued_at, old.serial) < (c.issued_at, c.serial):
                    self._by_name[(c.profile, n)] = c

    @classmethod
    def build(cls, rows: Iterable[tuple[str, str, str, Any, bool]],
              wanted: Iterable[tuple[str, Iterable[str]]],
              fetch: Callable[[Iterable[str]], dict[str, IssuedCert]],
              serials: Iterable[str] = ()) -> CertIndex:
        """From the store's lean rows (serial, profile, names JSON, raw issued_at,
        revoked): keep only the winners for the ``wanted`` (profile, names) and the given
        ``serials``, and ``fetch`` just those in full."""
        want = {(p, n) for p, names in wanted for n in names}
        want_names = {n for _, n in want}
        exact: dict[tuple[str, frozenset[str]], tuple[Any, str]] = {}
        by_name: dict[tuple[str, str], tuple[Any, str]] = {}
        for serial, profile, text, issued, revoked in rows:
            if revoked:
                continue
            names = _names_json(text)
            if names.isdisjoint(want_names):
                continue
            rank = (issued, serial)
            k = (profile, names)
            old = exact.get(k)
            if old is None or old < rank:
                exact[k] = rank
            for n in names:
                if (profile, n) in want:
                    old = by_name.get((profile, n))
                    if old is None or old < rank:
                        by_name[(profile, n)] = rank
        wanted_sets = {(p, frozenset(names)) for p, names in wanted}
        winners = {exact[k][1] for k in wanted_sets if k in exact}
        winners |= {r[1] for r in by_name.values()}
        return cls(fetch(winners | set(serials)).values())

    def newest_exact(self, profile: str, names: Iterable[str]) -> IssuedCert | None:
        """The newest unrevoked certificate of ``profile`` with exactly ``names``."""
        return self._exact.get((profile, frozenset(names)))

    def newest_sharing(self, profile: str, names: Iterable[str]) -> IssuedCert | None:
        """The newest unrevoked certificate of ``profile`` with any of ``names``."""
        found = [c for n in names if (c := self._by_name.get((profile, n))) is not None]
        return max(found, key=lambda c: (c.issued_at, c.serial)) if found else None

@dataclasses.dataclass(frozen=True)
class Evaluation:
    findings: list[Finding]
    # declared/endpoint expectation key -> the certificate found (issued or served) and,
    # for endpoints, the names it carries
    observed: list[tuple[str, IssuedCert | None, tuple[str, ...] | None]]
    # the declared/endpoint expectations judged (an endpoint this configuration does not
    # list cannot be probed: its findings are left to an evaluator that can)
    judged: frozenset[str] = frozenset()


def declared_expectations(settings: MonitorSettings, now: dt.datetime) -> list[Expectation]:
    """The configuration's expectations, as they would be stored when first seen now,
    with the deadline or grace it sets (stored with them, so that an evaluator holding
    another configuration judges them alike)."""
    out = [Expectation(key=e.key, source="declared", host=e.host, names=e.names,
                       first_seen=now, profile=e.profile, deadline=e.deadline,
                       grace=e.grace if e.grace is not None else settings.grace)
           for e in settings.expect]
    out += [Expectation(key=e.key, source="endpoint", host=e.address.rpartition(":")[0],
                        names=e.names, first_seen=now, profile=e.profile,
                        grace=e.grace if e.grace is not None else settings.grace)
            for e in settings.endpoints]
    return out


def _supersedes(newer: IssuedCert, current: IssuedCert) -> bool:
    """``newer`` was issued after ``current`` (serials order certificates issued in the
    same second) for the same names: what a deployment should now hold."""
    return newer.serial != current.serial and (
        newer.issued_at, newer.serial) > (current.issued_at, current.serial)


def _newest_note(newest: IssuedCert | None) -> str:
    return f"; {newest.serial} was issued at {_ts(newest.issued_at)}" if newest else ""


class _Evaluator:
    def __init__(self, settings: MonitorSettings, now: dt.datetime) -> None:
        self.s = settings
        self.now = now
        self.findings: list[Finding] = []
        self.declared = {e.key: e for e in settings.expect}
        self.endpoints = {e.key: e for e in settings.endpoints}

    def add(self, kind: str, subject: str, host: str | None, message: str,
            since: dt.datetime, severity: str | None = None) -> None:
        sev = severity or self.s.severity.get(kind) or DEFAULT_SEVERITY[kind]  # type: ignore[call-overload]
        self.findings.append(Finding(kind, sev, subject, host, message, since))

    def thresholds(self, profile: str | None) -> ExpiryThresholds:
        if profile is not None and profile in self.s.expiring_by_profile:
            return self.s.expiring_by_profile[profile]
        return self.s.expiring

    def expiry(self, e: Expectation, what: str, serial: str, not_before: dt.datetime | None,
               not_after: dt.datetime) -> None:
        if not_after <= self.now:
            self.add("expired", e.key, e.host,
                     f"{e.host}: {what} {serial} for {_list(e.names)} expired at "
                     f"{_ts(not_after)}", not_after)
            return
        left = not_after - self.now
        t = self.thresholds(e.profile)
        for severity, th in (("critical", t.critical), ("warning", t.warning)):
            if isinstance(th, dt.timedelta):
                limit = th
            elif not_before is not None:
                limit = (not_after - not_before) * th
            else:
                continue
            if left <= limit:
                self.add("expiring", e.key, e.host,
                         f"{e.host}: {what} {serial} for {_list(e.names)} expires at "
                         f"{_ts(not_after)} ({_span(left)} left)",
                         not_after - limit, severity)
                return

    def deadline(self, e: Expectation) -> dt.datetime:
        if e.deadline is not None:
            return e.deadline
        if e.grace is not None:
            return e.first_seen + e.grace
        d = self.declared.get(e.key)
        if d is not None and d.deadline is not None:
            return d.deadline
        grace = (d.grace if d is not None else
                 self.endpoints[e.key].grace if e.key in self.endpoints else None)
        return e.first_seen + (grace if grace is not None else self.s.grace)

    def declared_one(self, e: Expectation, index: CertIndex
                     ) -> tuple[str, IssuedCert | None, None]:
        profile = e.profile or ""
        cert = index.newest_exact(profile, e.names)
        if cert is not None:
            self.expiry(e, "certificate", cert.serial, cert.not_before, cert.not_after)
            return (e.key, cert, None)
        other = index.newest_sharing(profile, e.names)
        deadline = self.deadline(e)
        if other is not None:
            self.add("name-mismatch", e.key, e.host,
                     f"{e.host}: the newest {profile} certificate for these names, "
                     f"{other.serial}, has {_list(other.names)}; expected "
                     f"{_list(e.names)}", other.issued_at)
        elif self.now >= deadline:
            self.add("missing", e.key, e.host,
                     f"{e.host}: no {profile} certificate for {_list(e.names)} has been "
                     f"issued (expected since {_ts(e.first_seen)}, due {_ts(deadline)})",
                     deadline)
        return (e.key, None, None)

    def endpoint_one(self, e: Expectation, index: CertIndex, probe: Probe | None
                     ) -> tuple[str, IssuedCert | None, tuple[str, ...] | None]:
        profile = e.profile or ""
        where = e.key.removeprefix("endpoint:")
        deadline = self.deadline(e)
        if probe is None or probe.error is not None or probe.serial is None:
            if self.now >= deadline:
                why = probe.error if probe is not None and probe.error else "not probed"
                self.add("missing", e.key, e.host,
                         f"{where}: no certificate could be fetched: {why}", deadline)
            return (e.key, None, None)
        served = index.by_serial.get(probe.serial) if probe.issued_by_us else None
        if served is None:
            if self.now >= deadline:
                self.add("missing", e.key, e.host,
                         f"{where}: serves certificate {probe.serial} from {probe.issuer}, "
                         "not one this CA issued", deadline)
            return (e.key, None, tuple(probe.names))
        if frozenset(probe.names) != frozenset(e.names):
            self.add("name-mismatch", e.key, e.host,
                     f"{where}: serves {served.serial} for {_list(probe.names)}; expected "
                     f"{_list(e.names)}", served.issued_at)
        assert probe.not_after is not None
        self.expiry(e, "the served certificate", served.serial, probe.not_before,
                    probe.not_after)
        newest = index.newest_exact(profile, e.names)
        if served.revoked:
            self.add("stale-deployment", e.key, e.host,
                     f"{where}: serves {served.serial}, which is revoked"
                     + _newest_note(newest), served.issued_at, "critical")
        elif newest is not None and _supersedes(newest, served):
            self.add("stale-deployment", e.key, e.host,
                     f"{where}: still serves {served.serial} (issued {_ts(served.issued_at)})"
                     f" although {newest.serial} was issued at {_ts(newest.issued_at)}: the "
                     "server was not reloaded", newest.issued_at)
        return (e.key, served, tuple(probe.names))

    def agent_one(self, e: Expectation, index: CertIndex) -> None:
        spec = f"spec {e.spec}"
        if e.serial is None or e.not_after is None:
            due = e.first_seen + self.s.grace
            if self.now >= due:
                why = (f"; the last attempt at {_ts(e.last_attempt_at)} failed: {e.last_error}"
                       if e.last_error and e.last_attempt_at else
                       f"; last error: {e.last_error}" if e.last_error else "")
                self.add("missing", e.key, e.host,
                         f"{e.host}: {spec} has no certificate installed for "
                         f"{_list(e.names)} (reported since {_ts(e.first_seen)}){why}", due)
            return
        if e.last_error is not None:
            since = e.failing_since or e.last_attempt_at or e.first_seen
            self.add("renewal-failing", e.key, e.host,
                     f"{e.host}: {spec} fails to renew {e.serial} since {_ts(since)}: "
                     f"{e.last_error}", since)
        if e.cert_names is not None and frozenset(e.cert_names) != frozenset(e.names):
            self.add("name-mismatch", e.key, e.host,
                     f"{e.host}: {spec} has {e.serial} installed for "
                     f"{_list(e.cert_names)}; the spec derives {_list(e.names)}",
                     e.observed_at or e.first_seen)
        self.expiry(e, f"{spec}'s certificate", e.serial, e.not_before, e.not_after)
        self.agent_stale(e, index)

    def agent_stale(self, e: Expectation, index: CertIndex) -> None:
        """What the host reports installed against what this CA issued since: the same
        cross-check as for a probed endpoint, for every agent-reported spec. The profile is
        the installed certificate's (an EST spec need not name one). Only a certificate
        issued before the host's latest check-in counts, so an agent that checks in right
        after installing its renewal is never caught between the two. (Hosts that each
        hold their own certificate for the same names and profile look stale to each
        other: give them distinct names or profiles.)"""
        installed = index.by_serial.get(e.serial) if e.serial is not None else None
        if installed is None or e.observed_at is None:
            return  # not issued by this CA (or not yet reported)
        spec = f"spec {e.spec}"
        newest = index.newest_exact(installed.profile, e.names)
        if installed.revoked:
            self.add("stale-deployment", e.key, e.host,
                     f"{e.host}: {spec} has {installed.serial} installed, which is revoked"
                     + _newest_note(newest), installed.issued_at, "critical")
        elif (newest is not None and _supersedes(newest, installed)
              and newest.issued_at < e.observed_at):
            self.add("stale-deployment", e.key, e.host,
                     f"{e.host}: {spec} still has {installed.serial} (issued "
                     f"{_ts(installed.issued_at)}) installed although {newest.serial} was "
                     f"issued at {_ts(newest.issued_at)}: the new certificate was not "
                     "installed", newest.issued_at)

    def agent_silent(self, a: AgentRecord) -> None:
        interval = (dt.timedelta(seconds=a.interval_seconds) if a.interval_seconds
                    else self.s.agents.interval)
        due = a.checked_in_at + interval + self.s.agents.grace
        if self.now > due:
            self.add("agent-silent", f"agent:{a.host}", a.host,
                     f"the agent on {a.host} has not checked in since "
                     f"{_ts(a.checked_in_at)} (it checks in every {_span(interval)})", due)

    def pending(self, r: PendingRequest) -> None:
        due = r.created_at + self.s.pending_approval_max_age
        if self.now > due:
            self.add("pending-approval-stuck", f"request:{r.id}", None,
                     f"request {r.id} ({r.profile}, {_list(r.names) or 'no names'}, from "
                     f"{r.requester}) has waited for approval since {_ts(r.created_at)}", due)


def evaluate(settings: MonitorSettings, now: dt.datetime, *,
             expectations: Sequence[Expectation], agents: Sequence[AgentRecord],
             index: CertIndex, pending: Sequence[PendingRequest],
             probes: Mapping[str, Probe]) -> Evaluation:
    ev = _Evaluator(settings, now)
    observed: list[tuple[str, IssuedCert | None, tuple[str, ...] | None]] = []
    for e in expectations:
        if e.source == "agent":
            ev.agent_one(e, index)
        elif e.source == "endpoint":
            if e.key in ev.endpoints:
                observed.append(ev.endpoint_one(e, index, probes.get(e.key)))
        else:
            # Every declared expectation in force, whichever configuration declared it:
            # one this evaluator's configuration does not (yet) hold is still judged, by
            # what its declaring configuration stored.
            observed.append(ev.declared_one(e, index))
    for a in agents:
        ev.agent_silent(a)
    for r in pending:
        ev.pending(r)
    return Evaluation(ev.findings, observed, frozenset(k for k, _, _ in observed))
