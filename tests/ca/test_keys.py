"""Keys behind one interface (ca/keys.py), issuance signing once, and the built-in
profile the HTTPS listener's certificate is issued under (ca/builtin.py)."""

from __future__ import annotations

import collections
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509 import ocsp

from certwright import registry
from certwright.ca import builtin, datadir, lint
from certwright.ca.keys import (
    Decrypter,
    KeyProvider,
    KeyRole,
    Signer,
    SoftwareKeyProvider,
)
from certwright.ca.profiles import parse_config_text
from certwright.ca.service import CertificateAuthority, Issued
from certwright.clock import FakeClock
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki.keys import generate_ca_key, private_key_pem, write_atomic
from certwright.server import listener_cert
from tests.conftest import lint_and_verify
from tests.helpers import csr, request

# -- a provider that counts what its keys sign ---------------------------------------------


class CountingSigner:
    def __init__(self, inner: Signer, role: KeyRole, counts: collections.Counter[str]):
        self._inner, self._role, self._counts = inner, role, counts

    @property
    def certificate(self) -> x509.Certificate:
        return self._inner.certificate

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        self._counts[f"{self._role.value}:certificate"] += 1
        return self._inner.sign_certificate(builder)

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder
                 ) -> x509.CertificateRevocationList:
        self._counts[f"{self._role.value}:crl"] += 1
        return self._inner.sign_crl(builder)

    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        self._counts[f"{self._role.value}:ocsp"] += 1
        return self._inner.sign_ocsp(builder)

    def sign(self, data: bytes) -> bytes:
        self._counts[f"{self._role.value}:raw"] += 1
        return self._inner.sign(data)


class CountingProvider:
    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def name(self) -> str:
        return f"counting({self.inner.name})"

    def signer(self, role: KeyRole, certificate: x509.Certificate) -> Signer:
        return CountingSigner(self.inner.signer(role, certificate), role, self.counts)

    def decrypter(self, role: KeyRole) -> Decrypter:
        return self.inner.decrypter(role)

    def ensure(self, role: KeyRole, key_type: str) -> CertificateIssuerPublicKeyTypes:
        return self.inner.ensure(role, key_type)


def set_lint(data: Path, on: bool) -> None:
    config = data / datadir.CONFIG_NAME
    text = config.read_text()
    config.write_text(text.replace("  lint: false", f"  lint: {'true' if on else 'false'}", 1))


@pytest.fixture
def counted(ca_dir: Path, clock: FakeClock, request: pytest.FixtureRequest
            ) -> Iterator[tuple[CertificateAuthority, CountingProvider]]:
    lint_on = getattr(request, "param", False)
    if lint_on and not lint.available():
        pytest.skip("pkilint is not installed: pip install pkilint")
    set_lint(ca_dir, lint_on)
    provider = CountingProvider(SoftwareKeyProvider(ca_dir / "ca"))
    with datadir.opened(ca_dir, clock=clock, key_provider=provider) as ca:
        assert ca.authority.lint_before_signing is lint_on
        yield ca, provider


def issued_count(ca: CertificateAuthority) -> int:
    return ca.store.count_certificates()


# -- one CA signature per certificate ------------------------------------------------------


@pytest.mark.parametrize("counted", [False, True], ids=["lint-off", "lint-on"], indirect=True)
def test_ok_one_ca_signature_per_issued_certificate(
        counted: tuple[CertificateAuthority, CountingProvider]) -> None:
    ca, provider = counted
    for i in range(3):
        out = ca.enroll(request(csr([f"h{i}.svc.internal"], cn=f"h{i}.svc.internal")))
        assert isinstance(out, Issued)
    assert issued_count(ca) == 3
    assert provider.counts == {"issuing:certificate": 3}


@pytest.mark.parametrize("counted", [False, True], ids=["lint-off", "lint-on"], indirect=True)
def test_ok_serial_clash_costs_a_draw_not_a_signature(
        counted: tuple[CertificateAuthority, CountingProvider],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ca, provider = counted
    taken = ca.enroll(request(csr(["a.svc.internal"])))
    assert isinstance(taken, Issued)
    serials = iter([int(taken.record.serial, 16), int(taken.record.serial, 16), 0xC0FFEE])
    monkeypatch.setattr("certwright.ca.authority.new_serial", lambda: next(serials))
    again = ca.enroll(request(csr(["b.svc.internal"])))
    assert isinstance(again, Issued) and again.record.serial == "c0ffee"
    assert provider.counts == {"issuing:certificate": 2}


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-3072"])
def test_ok_lint_then_sign_once_for_other_ca_key_types(tmp_path: Path, key_type: str) -> None:
    """The linted TBS is the signed TBS whatever the CA key's algorithm (the throwaway
    key's signature AlgorithmIdentifier, inside the TBS, must equal the CA key's)."""
    if not lint.available():
        pytest.skip("pkilint is not installed: pip install pkilint")
    data = tmp_path / "ca"
    datadir.init(data, key_type=key_type)
    set_lint(data, True)
    provider = CountingProvider(SoftwareKeyProvider(data / "ca"))
    with datadir.opened(data, key_provider=provider) as ca:
        out = ca.enroll(request(csr(["a.svc.internal"], cn="a.svc.internal")))
        assert isinstance(out, Issued)
        assert out.certificate.signature_algorithm_oid == ca.chain[0].signature_algorithm_oid
    assert provider.counts == {"issuing:certificate": 1}
    assert lint_and_verify(data) == 1


def test_ok_serial_clash_inside_a_unit_on_each_store(
        store_ca_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """As front-ends enroll (inside ``ca.unit()``), on SQLite and PostgreSQL: the
    reservation sees the stored serial and draws again; one signature per certificate."""
    provider = CountingProvider(SoftwareKeyProvider(store_ca_dir / "ca"))
    with datadir.opened(store_ca_dir, clock=clock, key_provider=provider) as ca:
        with ca.unit():
            taken = ca.enroll(request(csr(["a.svc.internal"])))
        assert isinstance(taken, Issued)
        serials = iter([int(taken.record.serial, 16), 0xC0FFEE])
        monkeypatch.setattr("certwright.ca.authority.new_serial", lambda: next(serials))
        with ca.unit():
            again = ca.enroll(request(csr(["b.svc.internal"])))
        assert isinstance(again, Issued) and again.record.serial == "c0ffee"
        assert issued_count(ca) == 2
    assert provider.counts == {"issuing:certificate": 2}


def test_fail_serial_taken_while_signing_issues_nothing_and_signs_once(
        counted: tuple[CertificateAuthority, CountingProvider],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent issuance stores the reserved serial between reservation and commit:
    the signed certificate is dropped, not signed again under another serial."""
    ca, provider = counted
    taken = ca.enroll(request(csr(["a.svc.internal"])))
    assert isinstance(taken, Issued)
    monkeypatch.setattr("certwright.ca.authority.new_serial",
                        lambda: int(taken.record.serial, 16))
    real = ca.authority._serial_taken
    calls: list[int] = []

    def taken_later(serial: int) -> bool:
        calls.append(serial)
        return len(calls) > 1 and real(serial)  # the reservation does not see it yet

    monkeypatch.setattr(ca.authority, "_serial_taken", taken_later)
    with pytest.raises(CertwrightError) as e:
        ca.enroll(request(csr(["b.svc.internal"])))
    assert e.value.kind is ErrorKind.INTERNAL
    assert "was taken while this certificate was signed; nothing was issued" in str(e.value)
    assert issued_count(ca) == 1
    assert provider.counts == {"issuing:certificate": 2}


def test_fail_lint_finding_signs_and_stores_nothing(
        ca_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    if not lint.available():
        pytest.skip("pkilint is not installed: pip install pkilint")
    set_lint(ca_dir, True)
    provider = CountingProvider(SoftwareKeyProvider(ca_dir / "ca"))
    finding = lint.Finding("pkix", "pkix.test_finding", "ERROR", "made up by the test")
    monkeypatch.setattr(lint, "lint_certificate", lambda der, server_auth: [finding])
    with datadir.opened(ca_dir, clock=clock, key_provider=provider) as ca:
        before = ca.store.verify_audit()[0]
        with pytest.raises(CertwrightError) as e:
            ca.enroll(request(csr(["a.svc.internal"])))
        assert e.value.kind is ErrorKind.INTERNAL
        assert str(e.value).endswith("the certificate failed linting and was not signed: "
                                     "pkix ERROR pkix.test_finding: made up by the test")
        assert issued_count(ca) == 0
        assert ca.store.verify_audit()[0] == before
    assert provider.counts == {}


def test_fail_signed_tbs_differs_from_linted_is_not_stored(
        ca_dir: Path, clock: FakeClock) -> None:
    """What the CA key signs must be what was linted (a provider that rebuilt the TBS
    would sign something nobody checked)."""
    if not lint.available():
        pytest.skip("pkilint is not installed: pip install pkilint")
    set_lint(ca_dir, True)

    class Tampering(CountingProvider):
        def signer(self, role: KeyRole, certificate: x509.Certificate) -> Signer:
            inner = self.inner.signer(role, certificate)

            class Adds(CountingSigner):
                def sign_certificate(self, builder: x509.CertificateBuilder
                                     ) -> x509.Certificate:
                    return super().sign_certificate(builder.add_extension(
                        x509.OCSPNoCheck(), critical=False))

            return Adds(inner, role, self.counts)

    provider = Tampering(SoftwareKeyProvider(ca_dir / "ca"))
    with datadir.opened(ca_dir, clock=clock, key_provider=provider) as ca:
        with pytest.raises(CertwrightError, match="differs from the one linted"):
            ca.enroll(request(csr(["a.svc.internal"])))
        assert issued_count(ca) == 0
    assert provider.counts == {"issuing:certificate": 1}


def test_ok_crl_and_ocsp_signed_by_their_roles(
        counted: tuple[CertificateAuthority, CountingProvider]) -> None:
    ca, provider = counted
    out = ca.enroll(request(csr(["a.svc.internal"])))
    assert isinstance(out, Issued)
    ca.crl.current()
    req = ocsp.OCSPRequestBuilder().add_certificate(
        out.certificate, ca.chain[0], hashes.SHA256()).build()
    resp = ocsp.load_der_ocsp_response(
        ca.ocsp.respond(req.public_bytes(serialization.Encoding.DER)))
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert provider.counts == {"issuing:certificate": 1, "issuing:crl": 1, "ocsp:ocsp": 1}


# -- the software provider -----------------------------------------------------------------


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_ok_software_ensure_creates_a_private_key_file_once(tmp_path: Path) -> None:
    provider = SoftwareKeyProvider(tmp_path)
    first = provider.ensure(KeyRole.MESSAGE_PROTECTION, "ec-p256")
    path = tmp_path / "message-protection.key"
    assert mode(path) == 0o600
    assert provider.ensure(KeyRole.MESSAGE_PROTECTION, "ec-p256") == first
    assert SoftwareKeyProvider(tmp_path).ensure(KeyRole.MESSAGE_PROTECTION, "ec-p256") == first
    assert [p.name for p in tmp_path.iterdir()] == ["message-protection.key"]


def test_fail_software_ensure_never_replaces_a_key_of_another_type(tmp_path: Path) -> None:
    provider = SoftwareKeyProvider(tmp_path)
    provider.ensure(KeyRole.MESSAGE_PROTECTION, "ec-p256")
    before = (tmp_path / "message-protection.key").read_bytes()
    with pytest.raises(CertwrightError) as e:
        SoftwareKeyProvider(tmp_path).ensure(KeyRole.MESSAGE_PROTECTION, "ec-p384")
    assert e.value.kind is ErrorKind.CONFIG
    assert "the message-protection key exists and is not ec-p384; it is kept" in str(e.value)
    assert (tmp_path / "message-protection.key").read_bytes() == before


@pytest.mark.parametrize(("case", "role", "key_type", "message"), [
    ("fail/unknown-type", KeyRole.ISSUING, "dsa-1024", "unknown key type 'dsa-1024'"),
    ("fail/decryption-key-not-rsa", KeyRole.REQUEST_DECRYPTION, "ec-p256",
     "the request-decryption key decrypts (RSA key transport), so it must be RSA"),
])
def test_fail_software_ensure(tmp_path: Path, case: str, role: KeyRole, key_type: str,
                              message: str) -> None:
    with pytest.raises(CertwrightError) as e:
        SoftwareKeyProvider(tmp_path).ensure(role, key_type)
    assert e.value.kind is ErrorKind.CONFIG and message in str(e.value), case
    assert list(tmp_path.iterdir()) == [], case


def test_ok_software_decrypter_is_rsa_pkcs1v15(tmp_path: Path) -> None:
    provider = SoftwareKeyProvider(tmp_path)
    public = provider.ensure(KeyRole.REQUEST_DECRYPTION, "rsa-3072")
    assert isinstance(public, rsa.RSAPublicKey)
    decrypter = provider.decrypter(KeyRole.REQUEST_DECRYPTION)
    assert decrypter.public_key() == public
    secret = os.urandom(32)  # a content-encryption key, as SCEP clients wrap one
    assert decrypter.decrypt(public.encrypt(secret, padding.PKCS1v15())) == secret
    assert "PRIVATE" not in repr(decrypter) and "PRIVATE" not in repr(provider)


def test_fail_software_decrypter_of_a_signing_only_key(tmp_path: Path) -> None:
    write_atomic(tmp_path / "request-decryption.key",
                 private_key_pem(generate_ca_key("ec-p256")), 0o600)
    with pytest.raises(CertwrightError, match="is not an RSA key; only RSA keys decrypt"):
        SoftwareKeyProvider(tmp_path).decrypter(KeyRole.REQUEST_DECRYPTION)


def test_ok_software_raw_signature_verifies(ca_dir: Path) -> None:
    issuing = x509.load_pem_x509_certificate((ca_dir / "ca" / "issuing.pem").read_bytes())
    signer = SoftwareKeyProvider(ca_dir / "ca").signer(KeyRole.ISSUING, issuing)
    public = issuing.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = signer.sign(b"a CMP PKIMessage's protected part")
    public.verify(signature, b"a CMP PKIMessage's protected part", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"something else", ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize("case", ["fail/key-missing", "fail/key-not-the-ca-key",
                                  "fail/key-not-pem"])
def test_fail_open_ca_without_its_issuing_key(ca_dir: Path, case: str) -> None:
    """The provider fails closed: no CA opens with a missing or foreign issuing key."""
    key = ca_dir / "ca" / "issuing.key"
    if case == "fail/key-missing":
        key.unlink()
    elif case == "fail/key-not-the-ca-key":
        write_atomic(key, private_key_pem(generate_ca_key("ec-p384")), 0o600)
    else:
        write_atomic(key, b"not a key\n", 0o600)
    with pytest.raises(CertwrightError) as e:
        datadir.open_ca(ca_dir)
    assert e.value.kind is ErrorKind.CONFIG, case
    assert str(key) in str(e.value), case
    if case == "fail/key-not-the-ca-key":
        assert "the issuing key does not match the certificate" in str(e.value)


def test_ok_init_makes_the_issuing_key_through_the_provider(ca_dir: Path) -> None:
    issuing = x509.load_pem_x509_certificate((ca_dir / "ca" / "issuing.pem").read_bytes())
    provider = SoftwareKeyProvider(ca_dir / "ca")
    assert provider.ensure(KeyRole.ISSUING, "ec-p384") == issuing.public_key()
    assert mode(ca_dir / "ca" / "issuing.key") == 0o600
    text = (ca_dir / datadir.CONFIG_NAME).read_text()
    assert "\nkeys:\n  provider: software" in text


# -- the built-in profile of the HTTPS listener --------------------------------------------


def test_ok_listener_certificate_through_the_ra(ca: CertificateAuthority,
                                                tmp_path: Path) -> None:
    cert_path, key_path = listener_cert.ensure(ca, tmp_path / "tls")
    assert mode(key_path) == 0o600
    leaf, issuing = x509.load_pem_x509_certificates(cert_path.read_bytes())
    assert issuing == ca.chain[0]
    rec = ca.store.certificate(format(leaf.serial_number, "x"))
    assert (rec.profile, rec.protocol, rec.requester) == (
        builtin.HTTPS_LISTENER, "internal", "system:https-listener")
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == builtin.LISTENER_LIFETIME
    # Audited as every front-end's issuance is.
    issued = [r for r in ca.store.iter_audit()
              if r.event == "certificate.issued" and r.subject == rec.serial]
    assert len(issued) == 1
    assert issued[0].actor == "system:https-listener"
    data = json.loads(issued[0].data)
    assert {k: data[k] for k in ("profile", "protocol", "requester")} == {
        "profile": "_https-listener", "protocol": "internal",
        "requester": "system:https-listener"}
    # Current: asking again issues nothing.
    assert listener_cert.ensure(ca, tmp_path / "tls") == (cert_path, key_path)
    assert ca.store.count_certificates() == 1


@pytest.mark.parametrize("protocol", [p for p in registry.protocol_names() if p != registry.INTERNAL])
def test_fail_no_front_end_enrolls_under_the_listener_profile(
        ca: CertificateAuthority, protocol: str) -> None:
    with pytest.raises(CertwrightError) as e:
        ca.enroll(request(csr(["localhost"]), profile=builtin.HTTPS_LISTENER,
                          protocol=protocol))
    assert e.value.rule == "protocols"
    assert ca.store.count_certificates() == 0


@pytest.mark.parametrize(("case", "names", "rule"), [
    ("fail/name-not-a-hostname", ["other.svc.internal"], "names.dns"),
    ("fail/address-not-a-hostname", ["10.0.0.1"], "names.ip"),
    # localhost and the listener's address 127.0.0.1 (server.https_listen)
    ("fail/more-names-than-hostnames", ["localhost", "127.0.0.1", "a.localhost"],
     "names.max_names"),
])
def test_fail_listener_profile_allows_only_the_hostnames(
        ca: CertificateAuthority, case: str, names: list[str], rule: str) -> None:
    with pytest.raises(CertwrightError) as e:
        ca.enroll(request(csr(names), profile=builtin.HTTPS_LISTENER,
                          protocol="internal"))
    assert e.value.rule == rule, case


def test_ok_listener_profile_follows_the_hostnames() -> None:
    config = parse_config_text(
        "server: {hostnames: [ca.internal, 127.0.0.1, '::1']}\n"
        "profiles: {p: {names: {dns: ['*.internal']}}}\ndefault_profile: p\n", "x")
    profile = builtin.profile(config, builtin.HTTPS_LISTENER)
    assert profile is not None
    assert profile.protocols == ("internal",)
    assert profile.names.dns == ("ca.internal",)
    assert [str(n) for n in profile.names.ip] == ["127.0.0.1/32", "::1/128"]
    assert (profile.key_usage, profile.extended_key_usage) == (
        ("digital_signature",), ("server_auth",))
    assert builtin.profile(config, "p") is None


@pytest.mark.parametrize(("case", "listen", "names"), [
    ("ok/literal-address-added", "10.1.2.3:8443", ("ca.internal", "::1", "10.1.2.3")),
    ("ok/address-named-once", "[::1]:8443", ("ca.internal", "::1")),
    ("ok/wildcard-not-a-name", "0.0.0.0:8443", ("ca.internal", "::1")),
    ("ok/ipv6-wildcard-not-a-name", "[::]:8443", ("ca.internal", "::1")),
    ("ok/host-name-not-added", "ca.example:8443", ("ca.internal", "::1")),
])
def test_ok_listener_names_the_address_it_binds(case: str, listen: str,
                                                names: tuple[str, ...]) -> None:
    config = parse_config_text(
        f"server: {{hostnames: [ca.internal, '::1'], https_listen: '{listen}'}}\n"
        "profiles: {p: {}}\ndefault_profile: p\n", "x")
    assert builtin.listener_hostnames(config.server) == names, case


def test_fail_a_configured_profile_cannot_take_a_builtin_name() -> None:
    with pytest.raises(CertwrightError, match="use lower-case letters, digits and -"):
        parse_config_text("profiles: {_https-listener: {}}\n"
                          "default_profile: _https-listener\n", "x")



def test_ok_front_ends_reach_protocol_keys_through_the_core(tmp_path: Path) -> None:
    """A protocol key (SCEP's decryption key, CMP's protection key) comes from the
    provider the configuration names, through the core, never from a file of its own."""
    datadir.init(tmp_path / "ca")
    with datadir.opened(tmp_path / "ca") as ca:
        with pytest.raises(CertwrightError) as missing:
            ca.protocol_decrypter(KeyRole.REQUEST_DECRYPTION).decrypt(b"x")
        assert missing.value.kind is ErrorKind.CONFIG
        public = SoftwareKeyProvider(ca.layout.ca_dir).ensure(KeyRole.REQUEST_DECRYPTION,
                                                              "rsa-3072")
        assert isinstance(public, rsa.RSAPublicKey)
        wrapped = public.encrypt(b"content-encryption key", padding.PKCS1v15())
        decrypter = ca.protocol_decrypter(KeyRole.REQUEST_DECRYPTION)
        assert decrypter.decrypt(wrapped) == b"content-encryption key"
        signer = ca.protocol_signer(KeyRole.ISSUING, ca.chain[0])
        signature = signer.sign(b"message")
        issuing_key = ca.chain[0].public_key()
        assert isinstance(issuing_key, ec.EllipticCurvePublicKey)
        issuing_key.verify(signature, b"message", ec.ECDSA(hashes.SHA384()))
