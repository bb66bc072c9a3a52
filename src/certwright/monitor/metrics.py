"""Prometheus metrics: ``/metrics`` on the plain-HTTP listener.

Counts that must be exact whatever process answers the scrape (``serve --workers N``
forks processes that share the listeners) are read from the store at scrape time:
issuances and held requests from the certificates and requests tables, rejections from
the audit log (``request.rejected``; each process tallies the log incrementally from the
last sequence number it read, so a scrape reads only the records appended since), open
findings and expected certificates from the monitor's tables.

Request latency is measured in process memory by ``LatencyMiddleware`` around the HTTPS
application: with one worker that is the whole picture; with several, each process
knows only the requests it served, unless the operator sets ``PROMETHEUS_MULTIPROC_DIR``
(an empty directory, before the server starts): prometheus_client then keeps every
process's histogram in files there and a scrape adds them up.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import anyio.to_thread
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwright.ca.profiles import EST_OPERATIONS
from certwright.clock import Clock
from certwright.monitor.model import KINDS, SEVERITIES
from certwright.store import schema
from certwright.store.repo import Store

__all__ = ["EXPIRY_BUCKETS", "LatencyMiddleware", "StoreCollector", "classify",
           "metrics_endpoint"]

LATENCY_REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    "certwright_http_request_duration_seconds",
    "Time to answer a request on the HTTPS listener, by protocol and endpoint.",
    ["protocol", "endpoint"], registry=LATENCY_REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

_ACME = {"directory", "new-nonce", "new-account", "acct", "key-change", "new-order", "order",
         "authz", "chall", "cert", "revoke-cert", "renewal-info"}


def classify(path: str) -> tuple[str, str]:
    """(protocol, endpoint) of a request path, from a fixed set of values (a label must
    not take a value per order id or per profile)."""
    if path.startswith("/acme/"):
        parts = path[len("/acme/"):].split("/")
        if parts[0] == "directory":
            return "acme", "directory"
        resource = parts[1] if len(parts) > 1 else ""
        if resource == "order" and len(parts) > 3 and parts[3] == "finalize":
            return "acme", "finalize"
        if resource == "acct" and len(parts) > 3 and parts[3] == "orders":
            return "acme", "orders"
        return "acme", resource if resource in _ACME else "other"
    if path.startswith("/.well-known/est/"):
        op = path.rstrip("/").rsplit("/", 1)[-1]
        return "est", op if op in EST_OPERATIONS else "other"
    for proto in ("scep", "cmp"):
        if path.startswith(f"/{proto}"):
            return proto, "pkiclient" if proto == "scep" else "pkimessage"
    if path.startswith("/monitor/"):
        return "monitor", "checkin" if path.endswith("/checkin") else "other"
    return "other", "other"


class LatencyMiddleware:
    """Observes each HTTP request's time to the end of its response body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        protocol, endpoint = classify(scope["path"])
        done = False

        async def timed_send(message: Message) -> None:
            nonlocal done
            await send(message)
            if (message["type"] == "http.response.body" and not message.get("more_body")
                    and not done):
                done = True
                REQUEST_SECONDS.labels(protocol, endpoint).observe(
                    time.perf_counter() - started)

        await self.app(scope, receive, timed_send)


EXPIRY_BUCKETS = (("lt_1d", dt.timedelta(days=1)), ("lt_7d", dt.timedelta(days=7)),
                  ("lt_30d", dt.timedelta(days=30)), ("lt_90d", dt.timedelta(days=90)))

_C = schema.certificates.c
_R = schema.requests.c
_L = schema.audit_log.c
_F = schema.monitor_findings.c
_E = schema.monitor_expectations.c


class _RejectionTally:
    """Rejections in the audit log, read incrementally (the log is append-only and its
    sequence numbers are given out under the write lock, so commit order is seq order)."""

    def __init__(self) -> None:
        self.seq = 0
        self.by_profile: Counter[tuple[str, str]] = Counter()  # (protocol, profile)
        self.by_reason: Counter[tuple[str, str]] = Counter()  # (protocol, kind)
        self.lock = threading.Lock()

    def refresh(self, conn: sa.Connection) -> None:
        with self.lock:
            top = conn.execute(sa.select(sa.func.max(_L.seq))).scalar() or 0
            rows = conn.execute(sa.select(_L.data).where(
                _L.seq > self.seq, _L.seq <= top, _L.event == "request.rejected"))
            for (text,) in rows:
                data = json.loads(text)
                protocol = data.get("protocol")
                if protocol is None:
                    continue  # an operator's rejection: counted from the requests table
                self.by_profile[(protocol, str(data.get("profile")))] += 1
                self.by_reason[(protocol, str(data.get("kind") or "unknown"))] += 1
            self.seq = top


class StoreCollector(Collector):
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.rejections = _RejectionTally()

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        with self.store.read() as conn:
            self.rejections.refresh(conn)
            issued = conn.execute(sa.select(_C.protocol, _C.profile, sa.func.count())
                                  .group_by(_C.protocol, _C.profile)).all()
            held = conn.execute(sa.select(_R.protocol, _R.profile, _R.state, sa.func.count())
                                .group_by(_R.protocol, _R.profile, _R.state)).all()
            revoked = conn.execute(sa.select(_C.profile, sa.func.count())
                                   .where(_C.revoked_at.is_not(None))
                                   .group_by(_C.profile)).all()
            buckets = [sa.func.sum(sa.case((_C.not_after <= now, 1), else_=0))]
            edges = [dt.timedelta(0), *(d for _, d in EXPIRY_BUCKETS)]
            buckets += [sa.func.sum(sa.case((sa.and_(_C.not_after > now + lo,
                                                     _C.not_after <= now + hi), 1), else_=0))
                        for lo, hi in itertools.pairwise(edges)]
            buckets.append(sa.func.sum(sa.case((_C.not_after > now + EXPIRY_BUCKETS[-1][1], 1),
                                               else_=0)))
            by_expiry = conn.execute(sa.select(*buckets).where(_C.revoked_at.is_(None))).one()
            findings = conn.execute(sa.select(_F.kind, _F.severity, sa.func.count())
                                    .where(_F.resolved_at.is_(None))
                                    .group_by(_F.kind, _F.severity)).all()
            expected = conn.execute(sa.select(_E.key, _E.host, _E.profile, _E.source,
                                              _E.not_after)
                                    .where(_E.not_after.is_not(None))).all()

        enroll = CounterMetricFamily(
            "certwright_enrollments", "Enrollment requests by protocol, profile and "
            "outcome: issued (a certificate), held (for an operator; counted once, "
            "whatever the operator decided), rejected (by the profile or by an operator).",
            labels=["protocol", "profile", "result"])
        for protocol, profile, n in issued:
            enroll.add_metric([protocol, profile, "issued"], n)
        held_n: Counter[tuple[str, str]] = Counter()
        rejected = Counter(self.rejections.by_profile)
        operator_rejected: Counter[str] = Counter()
        for protocol, profile, state, n in held:
            held_n[(protocol, profile)] += n
            if state == "rejected":
                rejected[(protocol, profile)] += n
                operator_rejected[protocol] += n
        for (protocol, profile), n in sorted(held_n.items()):
            enroll.add_metric([protocol, profile, "held"], n)
        for (protocol, profile), n in sorted(rejected.items()):
            enroll.add_metric([protocol, profile, "rejected"], n)
        yield enroll

        failures = CounterMetricFamily(
            "certwright_enrollment_failures", "Enrollments refused, by protocol and reason "
            "(the error kind; operator: rejected by an operator).",
            labels=["protocol", "reason"])
        for (protocol, reason), n in sorted(self.rejections.by_reason.items()):
            failures.add_metric([protocol, reason], n)
        for protocol, n in sorted(operator_rejected.items()):
            failures.add_metric([protocol, "operator"], n)
        yield failures

        rev = CounterMetricFamily("certwright_certificates_revoked",
                                  "Certificates revoked, by profile.", labels=["profile"])
        for profile, n in revoked:
            rev.add_metric([profile], n)
        yield rev

        exp = GaugeMetricFamily("certwright_certificates_by_expiry",
                                "Unrevoked certificates by time left until notAfter "
                                "(lt_7d: more than 1 day, at most 7 days...).",
                                labels=["expiry"])
        names = ["expired", *(b for b, _ in EXPIRY_BUCKETS), "ge_90d"]
        for bucket, n in zip(names, by_expiry, strict=True):
            exp.add_metric([bucket], n or 0)
        yield exp

        counts: Counter[str] = Counter()
        for _, profile, state, n in held:
            if state == "pending":
                counts[profile] += n
        pending = GaugeMetricFamily("certwright_pending_approvals",
                                    "Requests waiting for an operator, by profile.",
                                    labels=["profile"])
        for profile, n in sorted(counts.items()):
            pending.add_metric([profile], n)
        yield pending

        open_f = GaugeMetricFamily("certwright_monitor_findings_open",
                                   "Open monitor findings by kind and severity.",
                                   labels=["kind", "severity"])
        found = {(k, s): n for k, s, n in findings}
        for kind in KINDS:
            for sev in SEVERITIES:
                if (kind, sev) in found or sev == "warning":
                    open_f.add_metric([kind, sev], found.get((kind, sev), 0))
        yield open_f

        ts = GaugeMetricFamily(
            "certwright_expected_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate each expectation holds (reported, issued or "
            "served), as seconds since the epoch.",
            labels=["expectation", "host", "profile", "source"])
        for key, host, profile, source, not_after in expected:
            ts.add_metric([key, host, profile or "", source], not_after.timestamp())
        yield ts


def _registry(collector: StoreCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(LATENCY_REGISTRY))
    registry.register(collector)
    return registry


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def metrics_endpoint(store: Store, clock: Clock) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for ``GET /metrics``."""
    registry = _registry(StoreCollector(store, clock))

    async def metrics(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
