"""Prometheus metrics: ``/metrics`` on the plain-HTTP listener.

Counts that must be exact whatever process answers the scrape (``serve --workers N``
forks processes that share the listeners) are read from the store at scrape time,
through the monitor's repository (``MonitorStorage.metrics``, aggregates only):
issuances and held requests from the certificates and requests tables, rejections from
the audit log (``request.rejected``; each process tallies the log incrementally from the
last sequence number it read, so a scrape reads only the records appended since), open
findings and expected certificates from the monitor's tables.

Request latency is measured in process memory by ``LatencyMiddleware`` around the HTTPS
application, labelled by the front-end that answers (the server gives the labels: this
module names no protocol); with one worker that is the whole picture; with several, each
process knows only the requests it served, unless the operator sets ``PROMETHEUS_MULTIPROC_DIR``
(an empty directory, before the server starts): prometheus_client then keeps every
process's histogram in files there and a scrape adds them up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwright.clock import Clock
from certwright.model.monitor import KINDS, SEVERITIES
from certwright.monitor.storage import MonitorStorage, Repositories, storage_of

__all__ = ["EXPIRY_BUCKETS", "Classifier", "CountsCollector", "LatencyMiddleware",
           "RouteLabel", "classify", "metrics_endpoint"]

LATENCY_REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    "certwright_http_request_duration_seconds",
    "Time to answer a request on the HTTPS listener, by protocol and endpoint.",
    ["protocol", "endpoint"], registry=LATENCY_REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


@dataclasses.dataclass(frozen=True)
class RouteLabel:
    """How the requests under one URL prefix are labelled: the front-end's ``protocol``,
    and as ``endpoint`` the path segment nearest its end that is one of ``endpoints``
    (an operation name, not an order id or a profile: a label must take its values from
    a fixed set), else ``default``."""

    protocol: str
    endpoints: frozenset[str] = frozenset()
    default: str = "other"

    def endpoint(self, rest: str) -> str:
        for segment in reversed(rest.split("/")):
            if segment in self.endpoints:
                return segment
        return self.default


Classifier = Callable[[str], tuple[str, str]]
"""A request path -> (protocol, endpoint)."""

OTHER = ("other", "other")


def classify(path: str, labels: Mapping[str, RouteLabel]) -> tuple[str, str]:
    """(protocol, endpoint) of a request path under the longest matching prefix."""
    best = ""
    for prefix in labels:
        if path.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return OTHER
    label = labels[best]
    return label.protocol, label.endpoint(path[len(best):])


def classifier(labels: Mapping[str, RouteLabel] | Classifier) -> Classifier:
    if callable(labels):
        return labels
    table = dict(labels)
    return lambda path: classify(path, table)


class LatencyMiddleware:
    """Observes each HTTP request's time to the end of its response body, labelled by
    ``labels``: URL prefix -> RouteLabel (each front-end's), or a function of the path."""

    def __init__(self, app: ASGIApp, labels: Mapping[str, RouteLabel] | Classifier) -> None:
        self.app = app
        self.classify = classifier(labels)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        protocol, endpoint = self.classify(scope["path"])
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


class _RejectionTally:
    """Rejections in the audit log, tallied incrementally: each scrape reads only the
    records appended since the last one this process read."""

    def __init__(self) -> None:
        self.seq = 0
        self.by_profile: Counter[tuple[str, str]] = Counter()  # (protocol, profile)
        self.by_reason: Counter[tuple[str, str]] = Counter()  # (protocol, kind)

    def add(self, seq: int, rejected: tuple[tuple[str, str, str], ...]) -> None:
        for protocol, profile, kind in rejected:
            self.by_profile[(protocol, profile)] += 1
            self.by_reason[(protocol, kind)] += 1
        self.seq = seq


class CountsCollector(Collector):
    def __init__(self, storage: MonitorStorage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        self.rejections = _RejectionTally()
        self.lock = threading.Lock()  # two scrapes at once must not count a record twice

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        with self.lock:
            snap = self.storage.metrics(now, [d for _, d in EXPIRY_BUCKETS],
                                        self.rejections.seq)
            self.rejections.add(snap.audit_seq, snap.rejected)
            by_profile = Counter(self.rejections.by_profile)
            by_reason = sorted(self.rejections.by_reason.items())

        enroll = CounterMetricFamily(
            "certwright_enrollments", "Enrollment requests by protocol, profile and "
            "outcome: issued (a certificate), held (for an operator; counted once, "
            "whatever the operator decided), rejected (by the profile or by an operator).",
            labels=["protocol", "profile", "result"])
        for protocol, profile, n in snap.issued:
            enroll.add_metric([protocol, profile, "issued"], n)
        held_n: Counter[tuple[str, str]] = Counter()
        rejected = by_profile
        operator_rejected: Counter[str] = Counter()
        for protocol, profile, state, n in snap.requests:
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
        for (protocol, reason), n in by_reason:
            failures.add_metric([protocol, reason], n)
        for protocol, n in sorted(operator_rejected.items()):
            failures.add_metric([protocol, "operator"], n)
        yield failures

        rev = CounterMetricFamily("certwright_certificates_revoked",
                                  "Certificates revoked, by profile.", labels=["profile"])
        for profile, n in snap.revoked:
            rev.add_metric([profile], n)
        yield rev

        exp = GaugeMetricFamily("certwright_certificates_by_expiry",
                                "Unrevoked certificates by time left until notAfter "
                                "(lt_7d: more than 1 day, at most 7 days...).",
                                labels=["expiry"])
        names = ["expired", *(b for b, _ in EXPIRY_BUCKETS), "ge_90d"]
        for bucket, n in zip(names, snap.by_expiry, strict=True):
            exp.add_metric([bucket], n)
        yield exp

        counts: Counter[str] = Counter()
        for _, profile, state, n in snap.requests:
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
        found = {(k, s): n for k, s, n in snap.open_findings}
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
        for key, host, held_profile, source, not_after in snap.expected:
            ts.add_metric([key, host, held_profile or "", source], not_after.timestamp())
        yield ts


def _registry(collector: CountsCollector) -> CollectorRegistry:
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


class MetricsCore(Repositories, Protocol):
    """What ``/metrics`` asks of the CertificateAuthority."""

    @property
    def clock(self) -> Clock: ...


def metrics_endpoint(ca: MetricsCore) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for ``GET /metrics``."""
    registry = _registry(CountsCollector(storage_of(ca), ca.clock))

    async def metrics(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
