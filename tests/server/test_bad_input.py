"""Bad input gets one clear error, and nothing is issued or stored as issued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certwright.ca import datadir
from certwright.ca.service import CertificateAuthority
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki import csr as csrlib
from tests.cli import assert_one_line_error, run
from tests.helpers import csr, csr_pem, key, request


def assert_nothing_issued(data: Path) -> None:
    with datadir.opened(data) as ca:
        assert ca.store.count_certificates() == 0
        assert not [r for r in ca.store.iter_audit() if r.event == "certificate.issued"]
        count, broken = ca.store.verify_audit()
    assert broken is None and count > 0


def tampered_signature(pem: bytes) -> bytes:
    c = csrlib.load(pem)
    der = bytearray(c.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    return bytes(der)


@pytest.fixture(scope="module")
def refusing_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One CA for all refusal cases: none of them may leave a certificate behind."""
    data = tmp_path_factory.mktemp("refusing") / "ca"
    datadir.init(data)
    yield data
    assert_nothing_issued(data)


CASES = [
    ("fail/not-a-csr", lambda: b"hello, world\n", [], "neither DER, PEM nor base64"),
    ("fail/truncated-der", lambda: csr(["a.svc.internal"]).public_bytes(
        serialization.Encoding.DER)[:100], [], "not valid DER PKCS#10"),
    ("fail/pem-of-a-certificate", lambda: b"-----BEGIN CERTIFICATE-----\nMIIB\n"
     b"-----END CERTIFICATE-----\n", [], "not a CERTIFICATE REQUEST"),
    ("fail/empty", lambda: b"", [], "CSR is empty"),
    ("fail/bad-signature", lambda: tampered_signature(csr_pem(["a.svc.internal"])), [],
     "no proof of possession"),
    ("fail/rsa-1024", lambda: csr_pem(["a.svc.internal"], private_key=key("rsa1024")), [],
     "RSA key of 1024 bits is too weak"),
    ("fail/unsupported-curve", lambda: csr_pem(["a.svc.internal"],
                                               private_key=key("secp256k1")), [],
     "elliptic curve secp256k1 is not supported"),
    ("fail/name-outside-profile", lambda: csr_pem(["www.example.com"]), [],
     "DNS name 'www.example.com' is outside this profile's names (rule names.dns)"),
    ("fail/wildcard-forbidden", lambda: csr_pem(["*.svc.internal"]), [],
     "wildcard name '*.svc.internal' is not allowed by this profile (rule names.wildcards)"),
    ("fail/ip-outside-networks", lambda: csr_pem(["a.svc.internal", "203.0.113.9"]), [],
     "IP address 203.0.113.9 is outside this profile's networks (rule names.ip)"),
    ("fail/validity-over-max", lambda: csr_pem(["a.svc.internal"]), ["--validity", "400d"],
     "exceeds this profile's maximum of 90 days (rule validity.max)"),
    ("fail/no-san", lambda: csr_pem([], cn="a.svc.internal"), [],
     "names no subject alternative name (rule names)"),
    ("fail/unknown-profile", lambda: csr_pem(["a.svc.internal"]), ["--profile", "nope"],
     "unknown profile 'nope'"),
]


@pytest.mark.parametrize(("case", "make", "args", "message"), CASES,
                         ids=[c[0] for c in CASES])
def test_fail_cli_issue(refusing_ca: Path, tmp_path: Path, case: str, make: object,
                        args: list[str], message: str) -> None:
    path = tmp_path / "req.csr"
    path.write_bytes(make())  # type: ignore[operator]
    out = tmp_path / "cert.pem"
    proc = run("issue", "--data", str(refusing_ca), "--csr", str(path), "--out", str(out),
               *args)
    assert_one_line_error(proc, message)
    assert not out.exists()
    assert proc.stdout == ""
    assert_nothing_issued(refusing_ca)


def test_fail_rejections_are_audited(ca: CertificateAuthority) -> None:
    with pytest.raises(CertwrightError) as e:
        ca.enroll(request(csr(["www.example.com"])))
    assert e.value.kind is ErrorKind.REJECTED_IDENTIFIER
    events = [r for r in ca.store.iter_audit() if r.event == "request.rejected"]
    assert len(events) == 1
    data = json.loads(events[0].data)
    assert data["rule"] == "names.dns"
    assert data["names"] == ["dns:www.example.com"]
    assert ca.store.count_certificates() == 0


def test_fail_config_typo_refuses_to_issue(ca_dir: Path, tmp_path: Path) -> None:
    cfg = ca_dir / "certwright.yaml"
    cfg.write_text(cfg.read_text().replace("wildcards: false", "wildcard: false", 1))
    path = tmp_path / "req.csr"
    path.write_bytes(csr_pem(["a.svc.internal"]))
    proc = run("issue", "--data", str(ca_dir), "--csr", str(path))
    assert_one_line_error(proc, "certwright.yaml: profiles.tls-server.names.wildcard: "
                          "unknown key (did you mean 'wildcards'?)")
    cfg.write_text(cfg.read_text().replace("wildcard: false", "wildcards: false", 1))
    assert_nothing_issued(ca_dir)


def test_fail_config_wrong_type(ca_dir: Path, tmp_path: Path) -> None:
    cfg = ca_dir / "certwright.yaml"
    original = cfg.read_text()
    cfg.write_text(original.replace("validity: {default: 90d, max: 90d}",
                                    "validity: {default: 90d, max: [90d]}", 1))
    path = tmp_path / "req.csr"
    path.write_bytes(csr_pem(["a.svc.internal"]))
    proc = run("issue", "--data", str(ca_dir), "--csr", str(path))
    assert_one_line_error(proc, "profiles.tls-server.validity.max: ")
    cfg.write_text(original)
    assert_nothing_issued(ca_dir)


def test_ok_cli_issue_writes_chain(ca_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "req.csr"
    path.write_bytes(csr_pem(["a.svc.internal"], cn="a.svc.internal"))
    out = tmp_path / "cert.pem"
    proc = run("issue", "--data", str(ca_dir), "--csr", str(path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert "issued serial" in proc.stderr
