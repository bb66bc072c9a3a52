"""The monitor in process, with a FakeClock: grace periods, expiry thresholds, the alert
state machine (open once, remind, resolve once, nothing again after a restart), the
signed webhook against a real HTTP server, e-mail to a real SMTP server (aiosmtpd),
check-in parsing and tokens."""

from __future__ import annotations

import datetime as dt
import email
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler

from certwright import registry
from certwright.ca import datadir
from certwright.ca.service import CertificateAuthority, Held, Issued
from certwright.clock import FakeClock
from certwright.errors import CertwrightError, ErrorKind
from certwright.model.monitor import AlertEvent
from certwright.monitor.alerts import AlertError, SmtpSink, WebhookSink
from certwright.monitor.checkin import accept, parse_checkin
from certwright.monitor.engine import Monitor
from certwright.monitor.metrics import classify
from certwright.monitor.storage import storage_of
from certwright.monitor.tokens import InvalidToken, Tokens, hash_token
from certwright.server.app import latency_labels
from certwright.store import schema
from tests.helpers import csr, request
from tests.monitor.monitor_support import add_monitor_config, receiving, spec_report, write_secret
from tests.served import free_ports

BASE = """
monitor:
  grace: 1h
  expect:
    - {host: db1.test, names: [db1.test], profile: tls-server}
  expiring: {warning: 33%, critical: 10%}
  agents: {interval: 1h, grace: 15m}
  pending_approval_max_age: 1d
  alerts: {reminder: 1d}
"""


class Inbox:
    """A sink that keeps what it is given (the webhook and SMTP sinks are tested against
    real servers below)."""

    name = "inbox"

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []
        self.fail = False

    def send(self, events: Sequence[AlertEvent], now: dt.datetime) -> None:
        if self.fail:
            raise AlertError("inbox refuses")
        self.events += events

    def take(self) -> list[tuple[str, str, str]]:
        out = [(e.event, e.finding.kind, e.finding.severity) for e in self.events]
        self.events.clear()
        return out


@pytest.fixture
def mca(ca_dir: Path, clock: FakeClock) -> Iterator[CertificateAuthority]:
    add_monitor_config(ca_dir, BASE)
    with datadir.opened(ca_dir, clock=clock) as ca:
        yield ca


def make(ca: CertificateAuthority, inbox: Inbox | None = None) -> Monitor:
    return Monitor(config=ca.config, storage=storage_of(ca), clock=ca.clock,
                   issuing=ca.chain[0], sinks=[inbox] if inbox else [], prober=lambda *_: {})


def kinds(m: Monitor, **kw: bool) -> list[tuple[str, str, str]]:
    return sorted((f.kind, f.severity, f.subject) for f in m.evaluate(**kw).open)


def issue(ca: CertificateAuthority, names: list[str], **kw: object) -> Issued:
    out = ca.enroll(request(csr(names), **kw))
    assert isinstance(out, Issued)
    return out


def test_ok_declared_missing_after_grace_alerts_once_and_resolves_once(
        mca: CertificateAuthority, clock: FakeClock) -> None:
    inbox = Inbox()
    m = make(mca, inbox)
    assert kinds(m) == [], "within the grace period nothing is missing yet"
    clock.advance(dt.timedelta(minutes=59))
    assert kinds(m) == []
    clock.advance(dt.timedelta(minutes=2))
    assert kinds(m) == [("missing", "critical", "declared:db1.test/dns:db1.test")]
    assert inbox.take() == [("open", "missing", "critical")]
    assert kinds(m) and inbox.take() == [], "alerted once, not at every evaluation"
    # A restart: a new monitor on the same store sends nothing more.
    assert kinds(make(mca, inbox)) and inbox.take() == []
    clock.advance(dt.timedelta(days=1))
    kinds(m)
    assert inbox.take() == [("reminder", "missing", "critical")]
    issue(mca, ["db1.test"])
    assert kinds(m) == []
    assert inbox.take() == [("resolved", "missing", "critical")]
    assert kinds(m) == [] and inbox.take() == []


def test_ok_expiring_escalates_then_expired(mca: CertificateAuthority, clock: FakeClock) -> None:
    inbox = Inbox()
    m = make(mca, inbox)
    cert = issue(mca, ["db1.test"], not_after=clock.now() + dt.timedelta(days=30)).record
    life = cert.not_after - cert.not_before
    assert kinds(m) == []
    clock.advance(cert.not_after - clock.now() - life * 0.34)
    assert kinds(m) == []
    clock.advance(life * 0.02)  # 32% left
    subject = "declared:db1.test/dns:db1.test"
    assert kinds(m) == [("expiring", "warning", subject)]
    clock.advance(life * 0.25)  # 7% left
    assert kinds(m) == [("expiring", "critical", subject)]
    clock.advance(cert.not_after - clock.now())
    assert kinds(m) == [("expired", "critical", subject)]
    assert inbox.take() == [("open", "expiring", "warning"), ("open", "expiring", "critical"),
                            ("open", "expired", "critical"), ("resolved", "expiring", "critical")]


def test_ok_name_mismatch_instead_of_missing(mca: CertificateAuthority, clock: FakeClock) -> None:
    issue(mca, ["db1.test", "db2.test"])
    found = make(mca).evaluate().open
    assert [(f.kind, f.subject) for f in found] == [
        ("name-mismatch", "declared:db1.test/dns:db1.test")]
    assert "dns:db1.test, dns:db2.test" in found[0].message


def test_ok_pending_approval_stuck(mca: CertificateAuthority, clock: FakeClock) -> None:
    held = mca.enroll(request(csr(["door.devices.internal"]), profile="device"))
    assert isinstance(held, Held)
    issue(mca, ["db1.test"])
    m = make(mca)
    clock.advance(dt.timedelta(hours=23))
    assert kinds(m) == []
    clock.advance(dt.timedelta(hours=2))
    assert kinds(m) == [("pending-approval-stuck", "warning", f"request:{held.request_id}")]
    mca.approve(held.request_id, "op")
    assert kinds(m) == []


def test_ok_agent_checkin_findings(mca: CertificateAuthority, clock: FakeClock) -> None:
    storage = storage_of(mca)
    token = Tokens(storage).add("web1.test", actor="test")
    issue(mca, ["db1.test"])
    m = make(mca)
    t0 = clock.now()
    report = {"version": 1, "host": "web1.test", "agent_version": "0.1", "checkin_interval": 600,
              "specs": [spec_report("web", ["web1.test"], error="rejected-identifier: no",
                                    at=t0)]}
    accept(storage, parse_checkin(json.dumps(report).encode()), token)
    assert kinds(m) == []
    clock.advance(dt.timedelta(minutes=61))
    found = m.evaluate().open
    assert sorted((f.kind, f.host) for f in found) == [("agent-silent", "web1.test"),
                                                       ("missing", "web1.test")]
    silent = next(f for f in found if f.kind == "agent-silent")
    assert "web1.test" in silent.message and "10 minutes" in silent.message
    missing = next(f for f in found if f.kind == "missing")
    assert "rejected-identifier: no" in missing.message
    # Installed now, but the last renewal failed and the names differ from the spec's.
    cert = issue(mca, ["web1.test", "old.test"]).certificate
    report["specs"] = [spec_report("web", ["web1.test"], cert=cert, error="timeout",
                                   at=clock.now())]
    accept(storage, parse_checkin(json.dumps(report).encode()), token)
    assert [k for k, _, _ in kinds(m)] == ["name-mismatch", "renewal-failing"]


def test_ok_agent_reporting_an_older_certificate_is_a_stale_deployment(
        mca: CertificateAuthority, clock: FakeClock) -> None:
    """A newer certificate was issued for an agent's spec, and the agent's next check-in
    still reports the old serial installed: `stale-deployment`. Issued before that
    check-in only (not while the agent is between issuance and reporting); it resolves
    when the new one is reported; a revoked one reported installed is critical."""
    from certwright.ca.revocation import Reason

    storage = storage_of(mca)
    token = Tokens(storage).add("web1.test", actor="test")
    m = make(mca)

    def checkin(cert: object) -> None:
        report = {"version": 1, "host": "web1.test", "agent_version": "0.1",
                  "checkin_interval": 600,
                  "specs": [spec_report("web", ["web1.test"], cert=cert, at=clock.now())]}
        accept(storage, parse_checkin(json.dumps(report).encode()), token)

    def stale() -> list[tuple[str, str, str]]:
        return sorted((f.severity, f.subject, f.message) for f in m.evaluate().open
                      if f.kind == "stale-deployment")

    old = issue(mca, ["web1.test"]).certificate
    checkin(old)
    assert stale() == []
    clock.advance(dt.timedelta(minutes=1))
    new = issue(mca, ["web1.test"]).certificate
    assert stale() == [], "issued after the host's last check-in: not yet stale"
    clock.advance(dt.timedelta(minutes=1))
    checkin(old)
    ((severity, subject, message),) = stale()
    assert (severity, subject) == ("warning", "agent:web1.test/web")
    assert f"{old.serial_number:x}" in message and f"{new.serial_number:x}" in message
    # Another profile's certificate for the same names is not a renewal of this one.
    issue(mca, ["web1.test"], profile="tls-client")
    assert len(stale()) == 1
    checkin(new)
    assert stale() == []
    mca.revoke(f"{new.serial_number:x}", Reason.key_compromise, "test")
    ((severity, _, message),) = stale()
    assert severity == "critical" and "revoked" in message


def test_ok_failed_delivery_is_retried_next_time(mca: CertificateAuthority,
                                                 clock: FakeClock) -> None:
    inbox = Inbox()
    m = make(mca, inbox)
    m.evaluate()  # the expectation is first seen: its grace period starts
    clock.advance(dt.timedelta(hours=2))
    inbox.fail = True
    report = m.evaluate()
    assert report.errors == ["inbox refuses"] and report.sent == []
    inbox.fail = False
    m.evaluate()
    assert inbox.take() == [("open", "missing", "critical")]


def test_ok_webhook_signed_and_retried(mca: CertificateAuthority, clock: FakeClock,
                                       ca_dir: Path) -> None:
    secret = write_secret(ca_dir)
    with receiving(fail_first=2) as hook:
        from certwright.monitor.config import WebhookSettings

        sink = WebhookSink(WebhookSettings.model_validate(
            {"url": hook.url, "secret_file": secret, "backoff": "1s", "attempts": 3}),
            ca_dir)
        m = Monitor(config=mca.config, storage=storage_of(mca), clock=clock,
                    issuing=mca.chain[0], sinks=[sink], prober=lambda *_: {})
        sink.stopping = m.stopping
        m.evaluate()
        clock.advance(dt.timedelta(hours=2))
        report = m.evaluate()
        assert report.errors == []
        events = hook.delivered()  # checks each signature
        assert [(e["event"], e["finding"]["kind"]) for e in events] == [("open", "missing")]
        assert len(hook.posts) == 3
        assert len({h["x-certwright-delivery"] for h, _ in hook.posts}) == 1


def test_fail_webhook_refused_is_not_retried_in_place(ca_dir: Path) -> None:
    from certwright.monitor.config import WebhookSettings

    secret = write_secret(ca_dir)
    sink = WebhookSink(WebhookSettings.model_validate(
        {"url": "http://127.0.0.1:9/hook", "secret_file": secret, "attempts": 2,
         "backoff": "1s", "timeout": "2s"}), ca_dir)
    with pytest.raises(AlertError, match=r"127\.0\.0\.1:9/hook: ConnectError"):
        sink.send([], dt.datetime.now(dt.UTC))


def test_ok_smtp_alert_received(mca: CertificateAuthority, clock: FakeClock) -> None:
    received: list[email.message.Message] = []

    class Handler(MessageHandler):
        def handle_message(self, message: email.message.Message) -> None:
            received.append(message)

    port = free_ports(1)[0]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        from certwright.monitor.config import SmtpSettings

        sink = SmtpSink(SmtpSettings.model_validate(
            {"host": "127.0.0.1", "port": port, "from": "ca@example.test",
             "to": ["ops@example.test"]}), Path("."))
        m = Monitor(config=mca.config, storage=storage_of(mca), clock=clock,
                    issuing=mca.chain[0], sinks=[sink], prober=lambda *_: {})
        m.evaluate()
        clock.advance(dt.timedelta(hours=2))
        assert m.evaluate().errors == []
    finally:
        controller.stop()
    assert len(received) == 1
    msg = received[0]
    assert msg["Subject"] == "[certwright] critical missing: db1.test"
    assert msg["To"] == "ops@example.test"
    assert "no tls-server certificate for dns:db1.test" in msg.get_payload(decode=True).decode()


@pytest.mark.parametrize("body,fragment", [
    (b"{", "not JSON"),
    (b'{"host": "a", "agent_version": "1", "specs": [{"name": "x", "names": ["bad name"]}]}',
     "specs.0.names"),
    (b'{"host": "a", "agent_version": "1", "specs": [{"name": "x", "names": ["a.test"]},'
     b' {"name": "x", "names": ["b.test"]}]}', "reported twice"),
    (b'{"host": "a/b", "agent_version": "1"}', "host"),
    (b'{"host": "a", "agent_version": "1", "specs": [{"name": "x", "names": ["a.test"],'
     b' "certificate": {"serial": "zz", "not_after": "2026-01-01T00:00:00Z"}}]}', "serial"),
], ids=["fail/not-json", "fail/bad-name", "fail/duplicate-spec", "fail/host", "fail/serial"])
def test_fail_checkin_parse(body: bytes, fragment: str) -> None:
    with pytest.raises(CertwrightError) as e:
        parse_checkin(body)
    assert e.value.kind is ErrorKind.MALFORMED and fragment in e.value.detail


def test_ok_checkin_tolerates_unknown_fields() -> None:
    c = parse_checkin(b'{"host": "Web1.Test", "agent_version": "1", "future": 1, "specs": '
                      b'[{"name": "x", "names": ["A.test", "10.0.0.1"], "new": true}]}')
    assert c.host == "web1.test" and c.specs[0].names == ("dns:a.test", "ip:10.0.0.1")


def test_ok_tokens_hashed_and_checked(mca: CertificateAuthority, clock: FakeClock) -> None:
    tokens = Tokens(storage_of(mca))
    token = tokens.add("h.test", actor="t")
    with mca.store.read() as conn:
        stored = conn.execute(schema.monitor_tokens.select()).one()
    assert token not in stored.secret and stored.secret.startswith("hmac-sha256$")
    tokens.authenticate("h.test", token)
    for host, tok in (("h.test", token + "x"), ("other.test", token)):
        with pytest.raises(CertwrightError) as e:
            tokens.authenticate(host, tok)
        assert e.value.kind is ErrorKind.UNAUTHORIZED
    with pytest.raises(InvalidToken):
        tokens.authenticate("h.test", token + "x")
    with pytest.raises(CertwrightError) as e:
        tokens.authenticate("other.test", token)
    assert not isinstance(e.value, InvalidToken), "a good token of another host is refused"
    with pytest.raises(CertwrightError, match="--replace"):
        tokens.add("h.test", actor="t")
    new = tokens.add("h.test", actor="t", replace=True)
    with pytest.raises(CertwrightError):
        tokens.authenticate("h.test", token)
    tokens.authenticate("h.test", new)


def test_ok_token_of_the_older_form_still_works(mca: CertificateAuthority) -> None:
    """Tokens printed before tokens named their host (``cwm_`` and 43 characters)."""
    storage = storage_of(mca)
    legacy = "cwm_" + "A" * 43
    storage.add_token("old.test", hash_token(legacy), actor="t", replace=False)
    Tokens(storage).authenticate("old.test", legacy)
    with pytest.raises(InvalidToken):
        Tokens(storage).authenticate("other.test", legacy)


def test_ok_repository_matches_the_monitors_protocol(mca: CertificateAuthority) -> None:
    """The repository the core hands over has every method MonitorStorage declares, with
    the same parameters (it comes as ``object``, so mypy cannot check it)."""
    import inspect

    from certwright.monitor.storage import MonitorStorage

    repository = type(mca.repository("monitor"))
    declared = {n for n, v in vars(MonitorStorage).items()
                if callable(v) and not n.startswith("_")}
    assert declared
    for name in declared:
        want = inspect.signature(getattr(MonitorStorage, name))
        got = inspect.signature(getattr(repository, name))
        assert str(got) == str(want), name


@pytest.mark.parametrize("path,expected", [
    ("/acme/tls-server/new-order", ("acme", "new-order")),
    ("/acme/tls-server/order/abc/finalize", ("acme", "finalize")),
    ("/acme/directory", ("acme", "directory")),
    ("/acme/tls-server/zzz", ("acme", "other")),
    ("/.well-known/est/simpleenroll", ("est", "simpleenroll")),
    ("/.well-known/est/device/serverkeygen", ("est", "serverkeygen")),
    ("/monitor/v1/checkin", ("monitor", "checkin")),
    ("/health", ("other", "other")),
])
def test_ok_latency_labels(path: str, expected: tuple[str, str]) -> None:
    assert classify(path, latency_labels(registry.frontends())) == expected


CHECKIN_OK = b'{"host": "api.test", "agent_version": "1", "specs": []}'
ERROR_CASES = {
    # name: (method, body, headers, status, fragment of the error, WWW-Authenticate)
    "fail/not-json": ("POST", b"{nope", {}, 400, "not JSON", None),
    "fail/bad-field": ("POST", b'{"host": "a/b", "agent_version": "1"}', {}, 400, "host",
                       None),
    "fail/no-token": ("POST", CHECKIN_OK, {"Authorization": ""}, 401, "bearer token",
                      'Bearer realm="certwright-monitor"'),
    "fail/unknown-token": ("POST", CHECKIN_OK, {"Authorization": "Bearer cwm_nope"}, 401,
                           "not valid", 'error="invalid_token"'),
    "fail/other-hosts-token": ("POST", CHECKIN_OK.replace(b"api.test", b"other.test"), {},
                               403, "own host", None),
    "fail/oversized": ("POST", b" " * (300 * 1024) + CHECKIN_OK, {}, 413, "larger than",
                       None),
    "fail/wrong-content-type": ("POST", CHECKIN_OK, {"Content-Type": "text/plain"}, 415,
                                "application/json", None),
    "fail/wrong-method": ("GET", b"", {}, 405, "POST", None),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_fail_checkin_api_errors(mca: CertificateAuthority, case: str) -> None:
    """Every error of the check-in API is one JSON document ``{"error": ...}`` with the
    status its meaning gives (errors.meaning, RFC 6750 3.1 for bearer tokens)."""
    import asyncio

    import httpx
    from starlette.applications import Starlette

    from certwright.monitor.checkin import checkin_routes

    method, body, extra, status, fragment, challenge = ERROR_CASES[case]
    token = Tokens(storage_of(mca)).add("api.test", actor="t")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               **extra}
    headers = {k: v for k, v in headers.items() if v}
    app = Starlette(routes=checkin_routes(mca))

    async def exchange() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="https://ca.test") as client:
            r = await client.request(method, "/monitor/v1/checkin", content=body,
                                     headers=headers)
            ok = await client.post("/monitor/v1/checkin", content=CHECKIN_OK, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            return r, ok

    r, ok = asyncio.run(exchange())
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"]
    if challenge is None:
        assert "www-authenticate" not in r.headers
    else:
        assert challenge in r.headers["www-authenticate"]
    if status == 405:
        assert r.headers["allow"] == "POST"
    assert ok.status_code == 200 and ok.json()["status"] == "ok", "ok/checkin"
