"""Revocation: the CRL publisher and the OCSP responder.

In-process tests move a FakeClock through the CRL refresh window and feed the responder
hand-built requests. The rest run a real ``certwright serve`` and check what it serves
with the real clients: ``openssl crl``, ``openssl verify -crl_check``, ``openssl ocsp``
(POST) and ``curl`` (the RFC 6960 A.1 GET form), with revocations made by the
``certwright certs revoke`` command while the server runs.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import itertools
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from certwright.ca import datadir
from certwright.ca.revocation import CrlPublisher, Reason
from certwright.ca.service import CertificateAuthority, Issued
from certwright.clock import FakeClock
from certwright.errors import CertwrightError, ErrorKind
from certwright.server.app import OCSP_MAX_REQUEST
from tests.cli import assert_one_line_error, run
from tests.conftest import lint_and_verify
from tests.helpers import csr, request
from tests.served import Served, curl, issue_leaf, openssl, serving

# -- building OCSP requests -----------------------------------------------------------

SHA1_OID = bytes.fromhex("06052b0e03021a")  # 1.3.14.3.2.26
MD5_OID = bytes.fromhex("06082a864886f70d0205")  # 1.2.840.113549.2.5
NONCE_OID = bytes.fromhex("06092b0601050507300102")  # 1.3.6.1.5.5.7.48.1.2


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def der_int(n: int) -> bytes:
    return tlv(0x02, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def cert_id(name_hash: bytes, key_hash: bytes, serial: int, hash_oid: bytes = SHA1_OID) -> bytes:
    """RFC 6960 4.1.1 CertID."""
    return tlv(0x30, tlv(0x30, hash_oid + b"\x05\x00") + tlv(0x04, name_hash)
               + tlv(0x04, key_hash) + der_int(serial))


def nonce_ext(nonce: bytes) -> bytes:
    return tlv(0x30, NONCE_OID + tlv(0x04, tlv(0x04, nonce)))


def ocsp_der(cert_ids: Sequence[bytes], extensions: Sequence[bytes] = ()) -> bytes:
    """An unsigned OCSPRequest: one Request per CertID, then requestExtensions [2]."""
    tbs = tlv(0x30, b"".join(tlv(0x30, c) for c in cert_ids))
    if extensions:
        tbs += tlv(0xA2, tlv(0x30, b"".join(extensions)))
    return tlv(0x30, tlv(0x30, tbs))


def any_cert(serial: int, issuer: x509.Certificate | None = None) -> x509.Certificate:
    """A throwaway certificate naming ``issuer``: a CertID takes only the serial and the
    issuer name from it (and the key hash from the issuer's certificate)."""
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not issued by anyone")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name)
            .issuer_name(issuer.subject if issuer else name)
            .public_key(k.public_key()).serial_number(serial).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(k, hashes.SHA256()))


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *,
                 algorithm: hashes.HashAlgorithm | None = None,
                 nonce: bytes | None = None) -> bytes:
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def issuer_hashes(issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """Our issuer's SHA-1 CertID hashes, as cryptography (not the responder) computes them."""
    req = ocsp.load_der_ocsp_request(ocsp_request(any_cert(1, issuer), issuer))
    return req.issuer_name_hash, req.issuer_key_hash


def nonce_of(resp: ocsp.OCSPResponse) -> bytes | None:
    for ext in resp.extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            return ext.value.nonce
    return None


def test_ok_der_builder_matches_cryptography() -> None:
    """The hand-built requests below are what cryptography would encode, when it can."""
    issuer = any_cert(7)
    name_hash, key_hash = issuer_hashes(issuer)
    nonce = os.urandom(16)
    assert ocsp_der([cert_id(name_hash, key_hash, 1234)], [nonce_ext(nonce)]) == (
        ocsp_request(any_cert(1234, issuer), issuer, nonce=nonce))


# -- the CRL publisher, in-process ------------------------------------------------------


def crl_number(der: bytes) -> int:
    return x509.load_der_x509_crl(der).extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number


def issue(ca: CertificateAuthority, name: str) -> Issued:
    out = ca.enroll(request(csr([name])))
    assert isinstance(out, Issued)
    return out


def test_ok_crl_kept_before_refresh_window(ca: CertificateAuthority, clock: FakeClock) -> None:
    first = ca.crl.current()
    settings = ca.config.issuance
    assert first.this_update == clock.now()
    assert first.next_update == clock.now() + settings.crl_validity
    clock.advance(settings.crl_validity - settings.crl_refresh_before - dt.timedelta(seconds=1))
    again = ca.crl.current()
    assert (again.number, again.der) == (first.number, first.der)


def test_ok_crl_regenerated_from_refresh_window(ca: CertificateAuthority,
                                               clock: FakeClock) -> None:
    first = ca.crl.current()
    settings = ca.config.issuance
    # now == nextUpdate - crl_refresh_before: the first instant the CRL counts as stale.
    clock.advance(first.next_update - settings.crl_refresh_before - clock.now())
    second = ca.crl.current()
    assert second.number == first.number + 1
    assert (second.this_update, second.next_update) == (
        clock.now(), clock.now() + settings.crl_validity)
    crl = x509.load_der_x509_crl(second.der)
    assert crl.last_update_utc == clock.now()
    assert crl.next_update_utc == clock.now() + settings.crl_validity
    assert crl_number(second.der) == second.number
    assert crl.is_signature_valid(ca.chain[0].public_key())  # type: ignore[arg-type]
    # Fresh again: the next fetch gets the same CRL.
    assert ca.crl.current().der == second.der


def test_ok_crl_numbers_strictly_increase(ca: CertificateAuthority, clock: FakeClock) -> None:
    refresh_after = ca.config.issuance.crl_validity - ca.config.issuance.crl_refresh_before
    numbers = [crl_number(ca.crl.current().der)]
    for i in range(3):
        ca.revoke(issue(ca, f"n{i}.svc.internal").record.serial, Reason.superseded, "test")
        numbers.append(crl_number(ca.crl.current().der))  # published by the revocation
        clock.advance(refresh_after)
        numbers.append(crl_number(ca.crl.current().der))  # published by the refresh
        clock.advance(dt.timedelta(minutes=1))
        numbers.append(crl_number(ca.crl.current().der))  # fresh: the same one
    increases = [b - a for a, b in itertools.pairwise(numbers)]
    assert increases == [1, 1, 0] * 3, numbers


def test_ok_crl_entries_and_reasons(ca: CertificateAuthority, clock: FakeClock) -> None:
    compromised = issue(ca, "kc.svc.internal")
    plain = issue(ca, "plain.svc.internal")
    kept = issue(ca, "kept.svc.internal")
    clock.advance(dt.timedelta(minutes=3))
    ca.revoke(compromised.record.serial, Reason.key_compromise, "test")
    ca.revoke(plain.record.serial, Reason.unspecified, "test")
    crl = x509.load_der_x509_crl(ca.crl.current().der)
    assert crl.get_revoked_certificate_by_serial_number(kept.certificate.serial_number) is None
    entry = crl.get_revoked_certificate_by_serial_number(compromised.certificate.serial_number)
    assert entry is not None and entry.revocation_date_utc == clock.now()
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise)
    entry = crl.get_revoked_certificate_by_serial_number(plain.certificate.serial_number)
    # RFC 5280 5.3.1: the reason code unspecified SHOULD be absent.
    assert entry is not None and len(entry.extensions) == 0
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.only_contains_user_certs
    assert idp.value.full_name == [x509.UniformResourceIdentifier(ca.authority.urls.crl)]


def test_fail_crl_refresh_not_shorter_than_validity(ca: CertificateAuthority) -> None:
    with pytest.raises(CertwrightError) as e:
        CrlPublisher(signer=ca.crl.signer, issuer_id=ca.authority.issuer_id,
                     crl_url=ca.crl.crl_url, store=ca.store, clock=ca.clock,
                     validity=dt.timedelta(days=5), refresh_before=dt.timedelta(days=5))
    assert e.value.kind is ErrorKind.CONFIG
    assert "crl_refresh_before (5d) must be shorter than issuance.crl_validity (5d)" in str(e.value)


def test_fail_crl_refresh_not_shorter_than_validity_cli(ca_dir: Path) -> None:
    config = ca_dir / "certwright.yaml"
    original = config.read_text()
    config.write_text(original.replace("crl_refresh_before: 3d", "crl_refresh_before: 8d"))
    with pytest.raises(CertwrightError, match=r"crl_refresh_before \(8d\) must be shorter"):
        datadir.open_ca(ca_dir)
    proc = run("crl", "--data", str(ca_dir))
    assert proc.returncode == 2
    assert_one_line_error(proc, "crl_refresh_before (8d) must be shorter")
    config.write_text(original)


# -- the OCSP responder, in-process -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: str  # which request to build, see ``_build``
    status: ocsp.OCSPResponseStatus
    cert_status: ocsp.OCSPCertStatus | None = None


OK = ocsp.OCSPResponseStatus.SUCCESSFUL
MALFORMED = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
CASES = [
    Case("ok/good", "good", OK, ocsp.OCSPCertStatus.GOOD),
    Case("ok/good-sha256-certid", "good-sha256", OK, ocsp.OCSPCertStatus.GOOD),
    Case("ok/revoked", "revoked", OK, ocsp.OCSPCertStatus.REVOKED),
    Case("ok/unknown-serial-of-our-issuer", "unknown", OK, ocsp.OCSPCertStatus.UNKNOWN),
    Case("ok/serial-zero", "serial-zero", OK, ocsp.OCSPCertStatus.UNKNOWN),
    Case("fail/other-issuer-unauthorized", "other-issuer",
         ocsp.OCSPResponseStatus.UNAUTHORIZED),
    Case("fail/empty", "empty", MALFORMED),
    Case("fail/garbage", "garbage", MALFORMED),
    Case("fail/truncated-der", "truncated", MALFORMED),
    Case("fail/trailing-bytes", "trailing", MALFORMED),
    Case("fail/duplicate-nonce-extension", "duplicate-nonce", MALFORMED),
    Case("fail/negative-serial", "negative-serial", MALFORMED),
    Case("fail/md5-certid", "md5", MALFORMED),
    Case("fail/no-request", "no-request", MALFORMED),
]


@pytest.fixture
def certs(ca: CertificateAuthority, clock: FakeClock) -> dict[str, x509.Certificate]:
    good = issue(ca, "good.svc.internal")
    revoked = issue(ca, "revoked.svc.internal")
    ca.revoke(revoked.record.serial, Reason.key_compromise, "test")
    clock.advance(dt.timedelta(minutes=1))
    return {"good": good.certificate, "revoked": revoked.certificate}


def _build(what: str, ca: CertificateAuthority, certs: dict[str, x509.Certificate],
           nonce: bytes) -> bytes:
    issuer = ca.chain[0]
    name_hash, key_hash = issuer_hashes(issuer)
    good = ocsp_request(certs["good"], issuer, nonce=nonce)
    ours = cert_id(name_hash, key_hash, certs["good"].serial_number)
    builders: dict[str, Callable[[], bytes]] = {
        "good": lambda: good,
        "good-sha256": lambda: ocsp_request(certs["good"], issuer, algorithm=hashes.SHA256(),
                                            nonce=nonce),
        "revoked": lambda: ocsp_request(certs["revoked"], issuer, nonce=nonce),
        "unknown": lambda: ocsp_request(any_cert(0x1234_5678_9ABC, issuer), issuer,
                                        nonce=nonce),
        "serial-zero": lambda: ocsp_der([cert_id(name_hash, key_hash, 0)], [nonce_ext(nonce)]),
        "other-issuer": lambda: ocsp_request(certs["good"], any_cert(99), nonce=nonce),
        "empty": lambda: b"",
        "garbage": lambda: b"this is not an OCSP request\n",
        "truncated": lambda: good[: len(good) // 2],
        "trailing": lambda: good + b"\x00",
        "duplicate-nonce": lambda: ocsp_der([ours], [nonce_ext(nonce), nonce_ext(nonce)]),
        "negative-serial": lambda: ocsp_der([cert_id(name_hash, key_hash, -1)]),
        "md5": lambda: ocsp_der([cert_id(b"\x00" * 16, b"\x00" * 16, 1, MD5_OID)]),
        "no-request": lambda: ocsp_der([]),
    }
    return builders[what]()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_responder(case: Case, ca: CertificateAuthority, certs: dict[str, x509.Certificate],
                   clock: FakeClock) -> None:
    nonce = os.urandom(16)
    resp = ocsp.load_der_ocsp_response(ca.ocsp.respond(_build(case.build, ca, certs, nonce)))
    assert resp.response_status is case.status
    if case.status is not OK:
        return
    issuer = ca.chain[0]
    assert resp.certificate_status is case.cert_status
    assert resp.this_update_utc == clock.now()
    assert resp.next_update_utc == clock.now() + ca.config.issuance.ocsp_validity
    assert nonce_of(resp) == nonce  # RFC 8954: echoed
    assert resp.responder_key_hash == issuer.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    issuer.public_key().verify(  # type: ignore[union-attr, call-arg]
        resp.signature, resp.tbs_response_bytes,
        ec.ECDSA(resp.signature_hash_algorithm))  # type: ignore[arg-type]
    if case.cert_status is ocsp.OCSPCertStatus.REVOKED:
        assert resp.revocation_reason is x509.ReasonFlags.key_compromise
        assert resp.revocation_time_utc == clock.now() - dt.timedelta(minutes=1)
    else:
        assert resp.revocation_time_utc is None and resp.revocation_reason is None


def test_ok_responder_without_nonce_sends_none(ca: CertificateAuthority,
                                               certs: dict[str, x509.Certificate]) -> None:
    resp = ocsp.load_der_ocsp_response(ca.ocsp.respond(ocsp_request(certs["good"], ca.chain[0])))
    assert resp.response_status is OK and nonce_of(resp) is None


# -- a real server: CRL over HTTP, openssl verify, openssl ocsp, curl -------------------


@dataclasses.dataclass(frozen=True)
class World:
    served: Served
    files: Path
    good: Path
    revoked: Path
    revoked_serial: int
    crl_number_before: int
    other_root: Path
    other_chain: Path
    other_leaf: Path


def _crl_url(cert: x509.Certificate) -> str:
    dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    full_name = dps[0].full_name
    assert full_name is not None
    return str(full_name[0].value)


def _ocsp_url(cert: x509.Certificate) -> str:
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return next(str(d.access_location.value) for d in aia
                if d.access_method == AuthorityInformationAccessOID.OCSP)


def openssl_hex(serial: int) -> str:
    """A serial as openssl prints it: upper-case hex, whole octets (leading zero kept)."""
    digits = f"{serial:X}"
    return "0" * (len(digits) % 2) + digits


def _openssl_crl_number(text: str) -> int:
    m = re.search(r"X509v3 CRL Number: *\n\s*(\d+)", text)
    assert m, text
    return int(m.group(1))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("revocation")
    with serving(base) as served:
        files = base / "files"
        files.mkdir()
        issue_leaf(served.data, "good.svc.internal", files / "good.pem")
        victim = issue_leaf(served.data, "revoked.svc.internal", files / "revoked.pem")
        before = curl(f"{served.http}/crl/{served.issuer_id}.crl")
        assert before.status == 200, before
        proc = run("certs", "revoke", format(victim.serial_number, "x"),
                   "--reason", "keyCompromise", "--data", str(served.data), check=True)
        assert f"revoked {victim.serial_number:x} (keyCompromise)" in proc.stdout
        # Another CA, never served: its certificates are not ours to answer for.
        other = base / "other"
        datadir.init(other, http="127.0.0.1:9", https="127.0.0.1:9")
        issue_leaf(other, "elsewhere.svc.internal", files / "other.pem")
        yield World(served, files, files / "good.pem", files / "revoked.pem",
                    victim.serial_number, crl_number(before.body), other / "root.pem",
                    other / "chain.pem", files / "other.pem")
        lint_and_verify(other)


def _leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _fetch_crl(world: World, tmp_path: Path) -> tuple[Path, str]:
    """The CRL from the URL in the certificate: (PEM path, ``openssl crl -text`` output)."""
    url = _crl_url(_leaf(world.good))
    assert url == f"{world.served.http}/crl/{world.served.issuer_id}.crl"
    got = curl(url)
    assert (got.status, got.content_type) == (200, "application/pkix-crl"), got
    der = tmp_path / "crl.der"
    der.write_bytes(got.body)
    text = openssl("crl", "-inform", "DER", "-in", str(der), "-noout", "-text")
    assert text.returncode == 0, text.stderr
    pem = tmp_path / "crl.pem"
    conv = openssl("crl", "-inform", "DER", "-in", str(der), "-out", str(pem))
    assert conv.returncode == 0, conv.stderr
    return pem, text.stdout


@pytest.mark.peer("curl")
def test_ok_served_crl_accepted_by_openssl(world: World, tmp_path: Path) -> None:
    pem, text = _fetch_crl(world, tmp_path)
    subject = openssl("x509", "-in", str(world.served.chain_pem), "-noout", "-subject",
                      "-nameopt", "oneline")
    issuer = openssl("crl", "-in", str(pem), "-noout", "-issuer", "-nameopt", "oneline")
    assert issuer.stdout.removeprefix("issuer=") == subject.stdout.removeprefix("subject=")
    m = re.search(r"Last Update: (.+ GMT)\n\s*Next Update: (.+ GMT)", text)
    assert m, text
    last, next_ = (dt.datetime.strptime(v, "%b %d %H:%M:%S %Y GMT") for v in m.groups())
    assert next_ - last == dt.timedelta(days=7)
    assert _openssl_crl_number(text) >= 1
    # Signed by the issuing CA.
    check = openssl("crl", "-in", str(pem), "-noout", "-CAfile", str(world.served.chain_pem))
    assert "verify OK" in check.stderr + check.stdout, check


@pytest.mark.peer("curl")
def test_ok_revocation_while_serving_lists_serial_with_higher_number(
        world: World, tmp_path: Path) -> None:
    _, text = _fetch_crl(world, tmp_path)
    assert _openssl_crl_number(text) > world.crl_number_before
    serial = openssl_hex(world.revoked_serial)
    assert re.search(rf"Serial Number: {serial}\n\s+Revocation Date: .+\n"
                     r"\s+CRL entry extensions:\n\s+X509v3 CRL Reason Code: *\n"
                     r"\s+Key Compromise\n", text), text
    assert text.count("Serial Number:") == 1, text


@pytest.mark.peer("curl")
@pytest.mark.parametrize("which", ["ok/good", "fail/revoked"])
def test_openssl_verify_crl_check(which: str, world: World, tmp_path: Path) -> None:
    pem, _ = _fetch_crl(world, tmp_path)
    leaf = world.good if which == "ok/good" else world.revoked
    proc = openssl("verify", "-crl_check", "-CAfile", str(world.served.root_pem),
                   "-untrusted", str(world.served.chain_pem), "-CRLfile", str(pem), str(leaf))
    if which == "ok/good":
        assert proc.returncode == 0 and f"{leaf}: OK" in proc.stdout, proc
    else:
        assert proc.returncode != 0, proc
        assert "certificate revoked" in proc.stdout + proc.stderr, proc


def _ocsp(world: World, tmp_path: Path, *args: str, issuer: Path | None = None,
          ca_file: Path | None = None) -> tuple[str, str, int]:
    url = _ocsp_url(_leaf(world.good))
    assert url == f"{world.served.http}/ocsp"
    proc = openssl("ocsp", "-issuer", str(issuer or world.served.chain_pem), *args,
                   "-url", url, "-CAfile", str(ca_file or world.served.root_pem),
                   "-resp_text", "-reqout", str(tmp_path / "req.der"),
                   "-respout", str(tmp_path / "resp.der"))
    return proc.stdout, proc.stderr, proc.returncode


@pytest.mark.peer("curl")
def test_ok_ocsp_good(world: World, tmp_path: Path) -> None:
    out, err, rc = _ocsp(world, tmp_path, "-cert", str(world.good))
    assert rc == 0, err
    assert "Response verify OK" in err and "WARNING" not in out + err
    assert f"{world.good}: good" in out


@pytest.mark.peer("curl")
def test_ok_ocsp_revoked_with_reason_and_time(world: World, tmp_path: Path) -> None:
    out, err, rc = _ocsp(world, tmp_path, "-cert", str(world.revoked))
    assert rc == 0 and "Response verify OK" in err, err
    m = re.search(rf"{re.escape(str(world.revoked))}: revoked\n.*\n.*\n"
                  r"\s+Reason: keyCompromise\n\s+Revocation Time: (.+ GMT)", out)
    assert m, out
    # The same revocation time as the CRL entry, fetched over the other channel.
    crl = x509.load_der_x509_crl(curl(f"{world.served.http}/crl/{world.served.issuer_id}.crl"
                                      ).body)
    entry = crl.get_revoked_certificate_by_serial_number(world.revoked_serial)
    assert entry is not None
    assert dt.datetime.strptime(m.group(1), "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=dt.UTC) == entry.revocation_date_utc


@pytest.mark.peer("curl")
def test_ok_ocsp_unknown_serial_of_our_issuer(world: World, tmp_path: Path) -> None:
    serial = f"0x{int.from_bytes(os.urandom(16), 'big') | 1:x}"
    out, err, rc = _ocsp(world, tmp_path, "-serial", serial)
    assert rc == 0 and "Response verify OK" in err, err
    assert f"{serial}: unknown" in out


@pytest.mark.peer("curl")
def test_fail_ocsp_other_ca_unauthorized(world: World, tmp_path: Path) -> None:
    out, err, rc = _ocsp(world, tmp_path, "-cert", str(world.other_leaf),
                         issuer=world.other_chain, ca_file=world.other_root)
    assert rc != 0
    assert "Responder Error: unauthorized (6)" in out + err


@pytest.mark.peer("curl")
def test_ok_ocsp_nonce_echoed(world: World, tmp_path: Path) -> None:
    _, err, rc = _ocsp(world, tmp_path, "-cert", str(world.good))
    assert rc == 0 and "Nonce Verify error" not in err
    req = ocsp.load_der_ocsp_request((tmp_path / "req.der").read_bytes())
    sent = [e.value.nonce for e in req.extensions if isinstance(e.value, x509.OCSPNonce)]
    resp = ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())
    assert len(sent) == 1 and nonce_of(resp) == sent[0]


@pytest.mark.peer("curl")
def test_ok_ocsp_without_nonce(world: World, tmp_path: Path) -> None:
    out, err, rc = _ocsp(world, tmp_path, "-cert", str(world.good), "-no_nonce")
    assert rc == 0 and f"{world.good}: good" in out, err
    assert nonce_of(ocsp.load_der_ocsp_response((tmp_path / "resp.der").read_bytes())) is None


def _request_with_awkward_base64(world: World) -> tuple[bytes, str]:
    """A request for the good certificate whose base64 has '/', '+' and '=' in it."""
    good, issuing = _leaf(world.good), world.served.issuing
    for i in range(10_000):
        # The nonce's length moves the DER length through every residue mod 3 (padding).
        der = ocsp_request(good, issuing, nonce=os.urandom(16 + i % 3))
        b64 = base64.b64encode(der).decode()
        if "/" in b64 and "+" in b64 and b64.endswith("="):
            return der, b64
    raise AssertionError("no nonce gave base64 with '/', '+' and '='")


GET_FORMS: dict[str, Callable[[str], str]] = {
    "ok/url-encoded": lambda b64: urllib.parse.quote(b64, safe=""),
    "ok/slash-left-raw": lambda b64: urllib.parse.quote(b64, safe="/"),
    "ok/all-raw": lambda b64: b64,
}


@pytest.mark.peer("curl")
@pytest.mark.parametrize("form", GET_FORMS)
def test_ocsp_get_form(form: str, world: World, tmp_path: Path) -> None:
    der, b64 = _request_with_awkward_base64(world)
    encoded = GET_FORMS[form](b64)
    if form == "ok/url-encoded":
        assert "%2F" in encoded and "%2B" in encoded and "%3D" in encoded
    else:
        assert "/" in encoded
    got = curl(f"{world.served.http}/ocsp/{encoded}")
    assert (got.status, got.content_type) == (200, "application/ocsp-response"), got
    (tmp_path / "req.der").write_bytes(der)
    (tmp_path / "resp.der").write_bytes(got.body)
    proc = openssl("ocsp", "-reqin", str(tmp_path / "req.der"),
                   "-respin", str(tmp_path / "resp.der"), "-issuer",
                   str(world.served.chain_pem), "-CAfile", str(world.served.root_pem),
                   "-resp_text")
    assert proc.returncode == 0, proc
    # -reqin: openssl checks the response's nonce against the request's.
    assert "Response verify OK" in proc.stderr and "Nonce Verify error" not in proc.stderr
    assert "Cert Status: good" in proc.stdout
    assert f"Serial Number: {openssl_hex(_leaf(world.good).serial_number)}" in proc.stdout


def _malformed_bodies(world: World) -> dict[str, bytes]:
    good = ocsp_request(_leaf(world.good), world.served.issuing, nonce=os.urandom(16))
    name_hash, key_hash = issuer_hashes(world.served.issuing)
    nonce = nonce_ext(os.urandom(16))
    return {
        "fail/garbage": b"GET / HTTP/1.0\r\n\r\n",
        "fail/empty": b"",
        "fail/truncated-der": good[:-7],
        "fail/duplicate-nonce": ocsp_der([cert_id(name_hash, key_hash, 5)], [nonce, nonce]),
        "fail/negative-serial": ocsp_der([cert_id(name_hash, key_hash, -5)]),
    }


def _assert_malformed(body: bytes, tmp_path: Path) -> None:
    (tmp_path / "resp.der").write_bytes(body)
    proc = openssl("ocsp", "-respin", str(tmp_path / "resp.der"), "-resp_text")
    assert "Responder Error: malformedrequest (1)" in proc.stdout + proc.stderr, proc


@pytest.mark.peer("curl")
@pytest.mark.parametrize("name", ["fail/garbage", "fail/empty", "fail/truncated-der",
                                  "fail/duplicate-nonce", "fail/negative-serial"])
def test_ocsp_post_malformed_gets_malformed_request(name: str, world: World,
                                                    tmp_path: Path) -> None:
    body = _malformed_bodies(world)[name]
    got = curl(f"{world.served.http}/ocsp", "-H", "Content-Type: application/ocsp-request",
               "--data-binary", "@-", input=body)
    assert (got.status, got.content_type) == (200, "application/ocsp-response"), got
    _assert_malformed(got.body, tmp_path)


@pytest.mark.peer("curl")
@pytest.mark.parametrize("path", ["", "%25%25%25", "AAAA", "MA%3D%3D", "not base64 at all"])
def test_fail_ocsp_get_malformed(path: str, world: World, tmp_path: Path) -> None:
    got = curl(f"{world.served.http}/ocsp/{urllib.parse.quote(path, safe='%')}")
    assert (got.status, got.content_type) == (200, "application/ocsp-response"), got
    _assert_malformed(got.body, tmp_path)


@pytest.mark.peer("curl")
@pytest.mark.parametrize("ctype", [None, "application/octet-stream", "text/plain"])
def test_fail_ocsp_wrong_content_type_415(ctype: str | None, world: World) -> None:
    body = ocsp_request(_leaf(world.good), world.served.issuing)
    headers = ["-H", f"Content-Type: {ctype}"] if ctype else []  # curl's default: a form
    got = curl(f"{world.served.http}/ocsp", *headers, "--data-binary", "@-", input=body)
    assert got.status == 415, got
    assert b"application/ocsp-request" in got.body


@pytest.mark.peer("curl")
def test_ok_ocsp_content_type_parameters_ignored(world: World) -> None:
    body = ocsp_request(_leaf(world.good), world.served.issuing)
    got = curl(f"{world.served.http}/ocsp", "-H",
               "Content-Type: Application/OCSP-Request; charset=binary",
               "--data-binary", "@-", input=body)
    assert got.status == 200
    resp = ocsp.load_der_ocsp_response(got.body)
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.peer("curl")
@pytest.mark.parametrize("size", [OCSP_MAX_REQUEST + 1, 256 * 1024 + 1],
                         ids=["over-ocsp-limit", "over-max-body-bytes"])
def test_fail_ocsp_oversized_body_413(size: int, world: World) -> None:
    got = curl(f"{world.served.http}/ocsp", "-H", "Content-Type: application/ocsp-request",
               "--data-binary", "@-", input=b"\x30" * size)
    assert got.status == 413, got
