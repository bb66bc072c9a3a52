"""`/metrics` of a real `certwright serve`, scraped and parsed with prometheus_client's
own parser after a known sequence of issuances, refusals, approvals and requests, made
by other processes (the CLI): the counts come from the store, so every process agrees."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.cli import run
from tests.helpers import csr_pem
from tests.monitor.monitor_support import AgentClient, add_monitor_config
from tests.served import Served, curl, serving

pytestmark = pytest.mark.peer("curl")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    def configure(data: Path) -> None:
        add_monitor_config(data, """
monitor:
  interval: 1s
  grace: 0s
  expect:
    - {id: ok, host: ok.internal, names: [ok.test], profile: tls-server}
    - {id: never, host: never.internal, names: [never.test], profile: tls-server}
""")

    with serving(tmp_path_factory.mktemp("monitor-metrics"), configure) as s:
        yield s


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(s: Served) -> tuple[Samples, dict[str, str]]:
    got = curl(f"{s.http}/metrics")
    assert got.status == 200 and got.content_type.startswith("text/plain")
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(got.body.decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def issue(s: Served, names: list[str], *args: str, out: Path | None = None) -> int:
    extra = ("--out", str(out)) if out else ()
    return run("issue", "--data", str(s.data), "--csr", "-", *args, *extra,
               input=csr_pem(names)).returncode


def test_ok_metrics_after_known_sequence(server: Served, tmp_path: Path) -> None:
    d = str(server.data)
    ok_pem = tmp_path / "ok.pem"
    assert issue(server, ["ok.test"], out=ok_pem) == 0
    gone_pem = tmp_path / "gone.pem"
    assert issue(server, ["gone.test"], out=gone_pem) == 0
    assert issue(server, ["short.test"], "--validity", "5d", out=tmp_path / "s.pem") == 0
    assert issue(server, ["bad.example.com"]) == 1  # names.dns refuses it
    for n in ("a", "b", "c"):
        assert issue(server, [f"{n}.devices.internal"], "--profile", "device") == 3  # held
    pending = run("requests", "list", "--data", d, "--json", check=True).stdout.splitlines()
    ids = [line.split('"id": "')[1].split('"')[0] for line in pending]
    run("requests", "approve", ids[0], "--data", d, check=True)
    run("requests", "reject", ids[1], "--data", d, check=True)
    gone = x509.load_pem_x509_certificates(gone_pem.read_bytes())[0]
    run("certs", "revoke", format(gone.serial_number, "x"), "--data", d, check=True)
    for _ in range(3):
        assert curl(f"{server.https}/acme/tls-server/directory", "--cacert",
                    str(server.root_pem)).status == 200
    token = run("monitor", "token", "add", "m.test", "--data", d, check=True).stdout.strip()
    agent = AgentClient(server.https, server.root_pem, "m.test", token)
    assert agent.checkin([]).status_code == 200
    assert agent.checkin([], token=token + "x").status_code == 401

    deadline = time.monotonic() + 15
    while True:  # until the server's loop has evaluated after the issuances
        samples, types = scrape(server)
        if value(samples, "certwright_monitor_findings_open", kind="missing",
                 severity="critical") == 1 and (
                "certwright_expected_certificate_expiry_timestamp_seconds",
                frozenset({"expectation": "declared:ok", "host": "ok.internal",
                           "profile": "tls-server", "source": "declared"}.items())) in samples:
            break
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)

    enroll = "certwright_enrollments_total"
    assert types["certwright_enrollments"] == "counter"
    assert value(samples, enroll, protocol="cli", profile="tls-server", result="issued") == 3
    assert value(samples, enroll, protocol="cli", profile="tls-server", result="rejected") == 1
    assert value(samples, enroll, protocol="cli", profile="device", result="held") == 3
    assert value(samples, enroll, protocol="cli", profile="device", result="issued") == 1
    assert value(samples, enroll, protocol="cli", profile="device", result="rejected") == 1
    fail = "certwright_enrollment_failures_total"
    assert value(samples, fail, protocol="cli", reason="rejected-identifier") == 1
    assert value(samples, fail, protocol="cli", reason="operator") == 1
    assert value(samples, "certwright_certificates_revoked_total", profile="tls-server") == 1

    by_expiry = {b: value(samples, "certwright_certificates_by_expiry", expiry=b)
                 for b in ("expired", "lt_1d", "lt_7d", "lt_30d", "lt_90d", "ge_90d")}
    # short.test (5 days); the HTTPS listener's own (30 days); ok.test (90); the device's
    assert by_expiry == {"expired": 0, "lt_1d": 0, "lt_7d": 1, "lt_30d": 1, "lt_90d": 1,
                         "ge_90d": 1}
    assert value(samples, enroll, protocol="internal", profile="_https-listener",
                 result="issued") == 1
    assert types["certwright_certificates_by_expiry"] == "gauge"
    assert value(samples, "certwright_pending_approvals", profile="device") == 1
    assert value(samples, "certwright_monitor_findings_open", kind="expiring",
                 severity="warning") == 0
    ok = x509.load_pem_x509_certificates(ok_pem.read_bytes())[0]
    assert value(samples, "certwright_expected_certificate_expiry_timestamp_seconds",
                 expectation="declared:ok", host="ok.internal", profile="tls-server",
                 source="declared") == ok.not_valid_after_utc.timestamp()

    hist = "certwright_http_request_duration_seconds"
    assert types[hist] == "histogram"
    assert value(samples, hist + "_count", protocol="acme", endpoint="directory") == 3
    assert value(samples, hist + "_count", protocol="monitor", endpoint="checkin") == 2
    assert value(samples, hist + "_bucket", protocol="acme", endpoint="directory",
                 le="+Inf") == 3
    assert value(samples, hist + "_sum", protocol="acme", endpoint="directory") > 0
