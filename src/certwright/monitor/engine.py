"""One evaluation, end to end: snapshot, evaluate, record, alert. The server runs it on
an interval (``run_forever``, first process only); ``certwright monitor check`` once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography import x509

from certwright.ca.profiles import Config
from certwright.clock import Clock
from certwright.errors import CertwrightError
from certwright.model.monitor import AlertEvent, Probe, StoredFinding, severity_rank
from certwright.monitor import config as monitorconfig
from certwright.monitor.alerts import AlertError, Sink, SmtpSink, WebhookSink
from certwright.monitor.config import ExpectedEndpoint
from certwright.monitor.evaluate import CertIndex, declared_expectations, evaluate
from certwright.monitor.probe import probe_all
from certwright.monitor.storage import MonitorCore, MonitorStorage, storage_of

__all__ = ["Monitor", "Report", "run_forever"]

log = logging.getLogger("certwright.monitor")

Prober = Callable[[Mapping[str, ExpectedEndpoint], x509.Certificate, float],
                  dict[str, Probe]]


@dataclasses.dataclass(frozen=True)
class Report:
    at: dt.datetime
    open: list[StoredFinding]
    sent: list[AlertEvent]
    errors: list[str]  # sinks that failed (their alerts are due again next time)

    def worst(self) -> int:
        return max((severity_rank(f.severity) for f in self.open), default=-1)


class Monitor:
    def __init__(self, *, config: Config, storage: MonitorStorage, clock: Clock,
                 issuing: x509.Certificate, sinks: list[Sink] | None = None,
                 prober: Prober = probe_all) -> None:
        self.config = config
        self.settings = monitorconfig.settings(config)
        self.storage = storage
        self.clock = clock
        self.issuing = issuing
        self.sinks = sinks or []
        self.prober = prober
        self.stopping = threading.Event()
        # The version of this configuration, registered as it is loaded: a later one has
        # a higher version, and only a configuration at least as new as the one that
        # declared an expectation may withdraw it (several workers and `monitor check`,
        # holding configurations read at different times, never undo each other).
        digest = hashlib.sha256(self.settings.model_dump_json().encode()).hexdigest()
        self.config_version = storage.register_config(digest)

    @classmethod
    def for_ca(cls, ca: MonitorCore, data: Path) -> Monitor:
        """A monitor with the sinks ``monitor.alerts`` configures (secrets read now)."""
        stopping = threading.Event()
        alerts = monitorconfig.settings(ca.config).alerts
        sinks: list[Sink] = []
        if alerts.webhook is not None:
            sinks.append(WebhookSink(alerts.webhook, data, stopping=stopping))
        if alerts.smtp is not None:
            sinks.append(SmtpSink(alerts.smtp, data))
        m = cls(config=ca.config, storage=storage_of(ca), clock=ca.clock,
                issuing=ca.chain[0], sinks=sinks)
        m.stopping = stopping
        return m

    def stop(self) -> None:
        self.stopping.set()

    def evaluate(self, *, alert: bool = True) -> Report:
        s = self.settings
        now = self.clock.now()
        expectations = self.storage.sync_declared(declared_expectations(s, now),
                                                  self.config_version, now)
        probes = self.prober({e.key: e for e in s.endpoints}, self.issuing,
                             s.probe_timeout.total_seconds())
        wanted = [(e.profile, e.names) for e in expectations
                  if e.profile and e.source != "agent"]
        served = [p.serial for p in probes.values() if p.serial is not None]
        # What agents report installed, looked up first for its profile: the newest
        # certificate for the spec's names is then searched in that profile.
        reported = {e.serial: e for e in expectations if e.source == "agent" and e.serial}
        installed = self.storage.certificates(reported) if reported else {}
        wanted += [(c.profile, reported[s].names) for s, c in installed.items()]
        served += list(installed)
        index = CertIndex.build(
            self.storage.issued_keys({p for p, _ in wanted}) if wanted else (), wanted,
            self.storage.certificates, served)
        result = evaluate(s, now, expectations=expectations, agents=self.storage.agents(),
                          index=index, pending=self.storage.pending_requests(), probes=probes)
        self.storage.record_observations(result.observed, now)
        events = self.storage.reconcile(result.findings, now, reminder=s.alerts.reminder,
                                      min_severity=s.alerts.min_severity,
                                      claim=alert and bool(self.sinks),
                                      judged=result.judged)
        errors: list[str] = []
        if events:
            for sink in self.sinks:
                try:
                    sink.send(events, now)
                except AlertError as e:
                    errors.append(str(e))
                    log.warning("alert not delivered (due again next time): %s", e)
            if errors:
                self.storage.unclaim(events)
        return Report(now, self.storage.open_findings(), [] if errors else events, errors)


async def run_forever(ca: MonitorCore, data: Path) -> None:
    """The server's loop: evaluate now, then every ``monitor.interval``."""
    try:
        monitor = Monitor.for_ca(ca, data)
    except CertwrightError as e:
        log.error("the monitor cannot start: %s", e)
        return
    interval = monitorconfig.settings(ca.config).interval.total_seconds()
    try:
        while True:
            try:
                await asyncio.to_thread(monitor.evaluate)
            except Exception:
                log.exception("monitor evaluation failed; next one in %s s", interval)
            await asyncio.sleep(interval)
    finally:
        monitor.stop()
