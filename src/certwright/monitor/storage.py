"""What the monitor asks of its storage and of the core, declared here, by the consumer.

The monitor's tables and queries live behind the storage layer (``store/monitor.py``,
registered as ``"monitor"``); the monitor reaches them through the core's
``repository("monitor")`` and sees only ``MonitorStorage``, so nothing under
``monitor/`` runs SQL or imports the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, Protocol, cast

from cryptography import x509

from certwright.ca.profiles import Config
from certwright.clock import Clock
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
)

__all__ = ["MonitorCore", "MonitorStorage", "Repositories", "storage_of"]


class MonitorStorage(Protocol):
    # Tokens: only their hashes are stored; tokens.py makes and checks them.
    def add_token(self, host: str, secret: str, *, actor: str, replace: bool) -> None: ...

    def remove_token(self, host: str, *, actor: str) -> None: ...

    def token_hosts(self) -> list[tuple[str, dt.datetime]]: ...

    def token_secret(self, host: str) -> str | None: ...

    # Check-ins and expectations.
    def record_checkin(self, report: AgentCheckIn) -> None: ...

    def agents(self) -> list[AgentRecord]: ...

    def expectations(self) -> list[Expectation]: ...

    def register_config(self, digest: str) -> int: ...

    def sync_declared(self, declared: Sequence[Expectation], version: int,
                      now: dt.datetime) -> list[Expectation]: ...

    def record_observations(self, observed: Iterable[tuple[str, IssuedCert | None,
                                                           tuple[str, ...] | None]],
                            now: dt.datetime) -> None: ...

    # What the CA did, in bulk (the evaluation reads every certificate of the expected
    # profiles once, not one query per expectation).
    def issued_keys(self, profiles: Iterable[str]
                    ) -> Iterator[tuple[str, str, str, Any, bool]]: ...

    def certificates(self, serials: Iterable[str]) -> dict[str, IssuedCert]: ...

    def pending_requests(self) -> list[PendingRequest]: ...

    # Findings and the alert state.
    def open_findings(self) -> list[StoredFinding]: ...

    def findings(self, ids: Iterable[int]) -> list[StoredFinding]: ...

    def reconcile(self, current: Sequence[Finding], now: dt.datetime, *,
                  reminder: dt.timedelta, min_severity: str, claim: bool = True,
                  judged: Collection[str] = ()) -> list[AlertEvent]: ...

    def unclaim(self, events: Sequence[AlertEvent]) -> None: ...

    # Metrics.
    def metrics(self, now: dt.datetime, expiry_edges: Sequence[dt.timedelta],
                rejected_after: int) -> MetricsSnapshot: ...


class Repositories(Protocol):
    """The one core call every part of the monitor makes."""

    def repository(self, kind: str) -> object: ...


class MonitorCore(Repositories, Protocol):
    """What the evaluation engine and the CLI ask of the CertificateAuthority."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]: ...


def storage_of(core: Repositories) -> MonitorStorage:
    # The storage layer registers the monitor's repository under this name and the core
    # hands it over as ``object`` (the layers below may not name this Protocol); a test
    # (test_monitor_units.py) holds the repository's signatures to MonitorStorage's.
    return cast(MonitorStorage, core.repository("monitor"))
