"""EST (RFC 7030) against a real ``certwright serve``, driven by curl and openssl as a
person would type them, and by the tests' own EST client (tests/est/est_client.py) for the
negative table and the tls-unique binding.

One server serves the module (``tests/served.py``); every certificate it issues is
linted and verified when it stops. The module's configuration adds to the defaults:
``est-keygen`` (label ``keygen``: serverkeygen allowed, automatic approval),
``est-pop`` (tls-unique binding required), ``est-anchor`` (client certificates from the
"factory" CA authenticate simpleenroll; no passwords), and lists 127.0.0.1 among the
listener's names so that ``https://127.0.0.1:PORT`` verifies as in the issue's example.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import json
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from certwright.ca import datadir
from certwright.ca.credentials import Credentials
from certwright.clock import Clock, FakeClock, SystemClock
from certwright.store.repo import Store
from tests.cli import run
from tests.est.est_client import EstClient, keygen_parts
from tests.helpers import csr, key
from tests.served import Served, curl, serving

pytestmark = pytest.mark.peer("curl")

FACTORY = "factory-ca.pem"


@dataclasses.dataclass(frozen=True)
class Issuer:
    """A CA of someone else's: a device manufacturer's, or an attacker's."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Issuer:
        k = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                             False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()),
                               critical=False)
                .sign(k, hashes.SHA256()))
        return cls(k, cert)

    def leaf(self, name: str, directory: Path) -> tuple[Path, Path]:
        """A client certificate for ``name`` (clientAuth), written as (cert, key) files."""
        k = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        return cert_path, key_path


@dataclasses.dataclass(frozen=True)
class World:
    served: Served
    factory: Issuer
    stranger: Issuer  # a CA the server knows nothing about

    @property
    def port(self) -> int:
        return self.served.https_port

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est/{path}"

    def client(self, **kwargs: Any) -> EstClient:
        return EstClient(self.port, self.served.root_pem, **kwargs)

    def credential(self, name: str, profile: str, *, one_time: bool = False,
                   expires: dt.timedelta | None = None, clock: Clock | None = None) -> str:
        """Add a credential straight to the store (the CLI is tested in the seed example
        and test_ok_credential_cli_list_and_remove: it costs a process start each time)."""
        _, config, _ = datadir.load(self.served.data)
        store = Store.open(config.store.url, self.served.data)
        try:
            c = clock or SystemClock()
            expires_at = c.now() + expires if expires is not None else None
            _, password = Credentials(store, c, "est").create(
                name, profile, actor="tester", one_time=one_time, expires_at=expires_at)
        finally:
            store.close()
        return password

    def count(self) -> int:
        """Certificates in the store."""
        _, config, _ = datadir.load(self.served.data)
        store = Store.open(config.store.url, self.served.data)
        try:
            return store.count_certificates()
        finally:
            store.close()


def _configure(data: Path, factory: Issuer) -> None:
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["server"]["hostnames"] = ["localhost", "127.0.0.1"]
    profiles = doc["profiles"]
    client = profiles["tls-client"]
    keygen = copy.deepcopy(client)
    keygen["est"].update(label="keygen", serverkeygen=True)
    pop = copy.deepcopy(client)
    pop["est"]["tls_unique_pop"] = True
    anchor = copy.deepcopy(client)
    anchor["est"].update(client_trust_anchors=[FACTORY], basic_auth=False)
    profiles.update({"est-keygen": keygen, "est-pop": pop, "est-anchor": anchor})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (data / FACTORY).write_bytes(factory.cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    factory, stranger = Issuer.create("Factory IDevID CA"), Issuer.create("Stranger CA")
    base = tmp_path_factory.mktemp("est")
    with serving(base, lambda data: _configure(data, factory)) as served:
        yield World(served, factory, stranger)


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A shell command line as a person types it (no proxies: everything is loopback)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    return proc


def pem_files(directory: Path, name: str, cert: x509.Certificate, k: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return cert_path, key_path


# -- the seed example ---------------------------------------------------------------------


@pytest.mark.parametrize("body", ["pem", "der", "base64"])
def test_ok_seed_example_curl_and_openssl(world: World, tmp_path: Path, body: str) -> None:
    """The issue's example, typed as a person would: openssl req, certwright est
    credential add, curl, openssl base64 | openssl pkcs7, openssl verify."""
    data, port = world.served.data, world.port
    proc = run("est", "credential", "add", f"device-{body}", "--profile", "tls-client",
               "--data", str(data), check=True)
    password = re.search(r"^password: (\S+)$", proc.stdout, re.M)
    assert password, proc.stdout
    name = f"device-{body}.internal"
    sh(f'openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes '
       f'-keyout device.key -out device.csr -subj "/CN={name}" '
       f'-addext "subjectAltName=DNS:{name}"', tmp_path)
    if body == "der":
        sh("openssl req -in device.csr -outform DER -out device.der && mv device.der device.csr",
           tmp_path)
    elif body == "base64":
        sh("openssl req -in device.csr -outform DER | openssl base64 > device.b64 && "
           "mv device.b64 device.csr", tmp_path)
    before = world.count()
    sh(f"curl --cacert {data}/root.pem --user device-{body}:{password.group(1)} "
       f"--data-binary @device.csr -H 'Content-Type: application/pkcs10' "
       f"-o device-cert.p7 --fail "
       f"https://127.0.0.1:{port}/.well-known/est/simpleenroll", tmp_path)
    sh("openssl base64 -d -in device-cert.p7 | openssl pkcs7 -inform DER -print_certs "
       "-out device.pem", tmp_path)
    verified = sh(f"openssl verify -CAfile {data}/root.pem -untrusted {data}/chain.pem "
                  "device.pem", tmp_path)
    assert "device.pem: OK" in verified.stdout
    cert = x509.load_pem_x509_certificate((tmp_path / "device.pem").read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={name}"
    assert world.count() == before + 1
    # The certificate is for the key openssl made.
    sh("test \"$(openssl x509 -in device.pem -noout -pubkey)\" = "
       "\"$(openssl pkey -in device.key -pubout)\"", tmp_path)


def test_ok_cacerts_decoded_by_openssl(world: World, tmp_path: Path) -> None:
    got = curl(world.url("cacerts"), "--cacert", str(world.served.root_pem))
    assert got.status == 200, got
    assert got.content_type == "application/pkcs7-mime; smime-type=certs-only"
    (tmp_path / "cacerts.p7").write_bytes(got.body)
    out = sh("openssl base64 -d -in cacerts.p7 | openssl pkcs7 -inform DER -print_certs",
             tmp_path).stdout
    certs = x509.load_pem_x509_certificates(out.encode())
    root = x509.load_pem_x509_certificate(world.served.root_pem.read_bytes())
    assert {c.fingerprint(hashes.SHA256()) for c in certs} == {
        root.fingerprint(hashes.SHA256()), world.served.issuing.fingerprint(hashes.SHA256())}
    # The same under a label.
    labelled = curl(world.url("keygen/cacerts"), "--cacert", str(world.served.root_pem))
    assert labelled.body == got.body


def test_ok_csrattrs_decoded_by_openssl_asn1parse(world: World, tmp_path: Path) -> None:
    got = curl(world.url("est-pop/csrattrs"), "--cacert", str(world.served.root_pem))
    assert (got.status, got.content_type) == (200, "application/csrattrs"), got
    (tmp_path / "attrs.b64").write_bytes(got.body)
    parsed = sh("openssl base64 -d -in attrs.b64 | openssl asn1parse -inform DER",
                tmp_path).stdout
    objects = re.findall(r"OBJECT\s+:(.+?)\s*$", parsed, re.M)
    assert objects == ["challengePassword", "id-ecPublicKey", "secp384r1", "prime256v1",
                       "rsaEncryption", "ED25519", "Extension Request",
                       "X509v3 Subject Alternative Name"], parsed
    assert re.search(r"INTEGER\s+:0800", parsed), parsed  # 2048-bit RSA at least
    # Without a label: the default profile (tls-server), which binds nothing to TLS.
    plain = curl(world.url("csrattrs"), "--cacert", str(world.served.root_pem))
    assert plain.status == 200 and plain.body != got.body


def _enrolled(world: World, directory: Path, name: str) -> tuple[Path, Path]:
    """A tls-client certificate and key for ``name``, enrolled over EST."""
    password = world.credential(f"enrol-{name}", "tls-client")
    k = key()
    got = world.client(user=f"enrol-{name}", password=password).enroll(csr([name], cn=name,
                                                                           private_key=k))
    assert got.status == 200, got
    return pem_files(directory, name, got.certificates()[0], k)


def test_ok_simplereenroll_with_curl_client_certificate(world: World, tmp_path: Path) -> None:
    name = "renew-me.internal"
    cert_path, key_path = _enrolled(world, tmp_path, name)
    sh(f'openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout new.key '
       f'-out new.csr -subj "/CN={name}" -addext "subjectAltName=DNS:{name}"', tmp_path)
    before = world.count()
    sh(f"curl --cacert {world.served.root_pem} --cert {cert_path} --key {key_path} "
       f"--data-binary @new.csr -H 'Content-Type: application/pkcs10' -o new.p7 --fail "
       f"https://127.0.0.1:{world.port}/.well-known/est/simplereenroll", tmp_path)
    sh("openssl base64 -d -in new.p7 | openssl pkcs7 -inform DER -print_certs -out new.pem",
       tmp_path)
    old = x509.load_pem_x509_certificate(cert_path.read_bytes())
    new = x509.load_pem_x509_certificate((tmp_path / "new.pem").read_bytes())
    assert new.subject == old.subject
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == \
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert isinstance(new.public_key(), ec.EllipticCurvePublicKey)
    assert new.public_key().curve.name == "secp384r1"  # re-keyed
    assert new.serial_number != old.serial_number
    assert world.count() == before + 1


def test_ok_serverkeygen_multipart_from_curl(world: World, tmp_path: Path) -> None:
    password = world.credential("keygen-curl", "est-keygen")
    sh('openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout x.key '
       '-out gen.csr -subj "/CN=gen.internal" -addext "subjectAltName=DNS:gen.internal"',
       tmp_path)
    got = curl(world.url("keygen/serverkeygen"), "--cacert", str(world.served.root_pem),
               "--user", f"keygen-curl:{password}", "--data-binary",
               f"@{tmp_path / 'gen.csr'}", "-H", "Content-Type: application/pkcs10")
    assert got.status == 200, got
    key_der, cert = keygen_parts(got.content_type, got.body)
    private = serialization.load_der_private_key(key_der, None)
    assert private.public_key() == cert.public_key()
    client_key = serialization.load_pem_private_key((tmp_path / "x.key").read_bytes(), None)
    assert cert.public_key() != client_key.public_key()  # the server's key, not the CSR's
    assert cert.subject.rfc4514_string() == "CN=gen.internal"


# -- manual approval ------------------------------------------------------------------------


def _request_id(text: str) -> str:
    m = re.match(r"request ([0-9a-f]+) is pending", text)
    assert m, text
    return m.group(1)


def test_ok_manual_approval_202_then_certificate(world: World) -> None:
    password = world.credential("sensor-7", "device")
    client = world.client(user="sensor-7", password=password)
    request = csr([], cn="sensor-7.devices.internal")  # a CN only: device has cn_as_san
    before = world.count()
    first = client.enroll(request)
    assert first.status == 202, first
    assert first.headers["retry-after"] == "60"
    again = client.enroll(request)  # the client repeats the same request
    assert again.status == 202 and _request_id(again.text) == _request_id(first.text)
    assert world.count() == before
    approved = run("requests", "approve", _request_id(first.text), "--data",
                   str(world.served.data), check=True)
    assert "issued serial" in approved.stdout
    done = client.enroll(request)
    assert done.status == 200, done
    cert = done.certificates()[0]
    assert cert.public_key() == request.public_key()
    assert world.count() == before + 1


def test_fail_manual_rejection_403_with_reason(world: World) -> None:
    password = world.credential("sensor-8", "device")
    client = world.client(user="sensor-8", password=password)
    request = csr([], cn="sensor-8.devices.internal")
    first = client.enroll(request)
    assert first.status == 202, first
    run("requests", "reject", _request_id(first.text), "--reason", "unknown device",
        "--data", str(world.served.data), check=True)
    refused = client.enroll(request)
    assert refused.status == 403, refused
    assert "rejected: unknown device" in refused.text


def test_ok_serverkeygen_held_for_approval_then_key_and_certificate(world: World) -> None:
    password = world.credential("sensor-9", "device")
    client = world.client(user="sensor-9", password=password)
    request = csr(["sensor-9.devices.internal"])
    first = client.enroll(request, operation="serverkeygen", label="device")
    assert first.status == 202, first
    run("requests", "approve", _request_id(first.text), "--data", str(world.served.data),
        check=True)
    done = client.enroll(request, operation="serverkeygen", label="device")
    assert done.status == 200, done
    key_der, cert = done.keygen_parts()
    assert serialization.load_der_private_key(key_der, None).public_key() == cert.public_key()
    # Collected: the store keeps no key, and the same request now starts afresh.
    assert client.enroll(request, operation="serverkeygen", label="device").status == 202


# -- tls-unique (RFC 7030 3.5) --------------------------------------------------------------


def _bound_csr(name: str, binding: bytes | None) -> bytes:
    k = key()
    b = (x509.CertificateSigningRequestBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False))
    if binding is not None:
        b = b.add_attribute(AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(binding))
    return base64.encodebytes(b.sign(k, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER))


def test_ok_tls_unique_binding_under_tls12(world: World) -> None:
    password = world.credential("pop-1", "est-pop")
    client = world.client(user="pop-1", password=password, tls12=True)
    got = client.request("POST", "simpleenroll",
                         lambda binding: _bound_csr("pop.internal", binding), label="est-pop")
    assert got.status == 200, got


def test_fail_tls_unique_of_another_session(world: World) -> None:
    password = world.credential("pop-2", "est-pop")
    client = world.client(user="pop-2", password=password, tls12=True)
    before = world.count()
    # A CSR bound to an earlier connection, replayed on a new one.
    stale = client.session_binding()
    assert stale is not None
    got = client.request("POST", "simpleenroll", _bound_csr("pop.internal", stale),
                         label="est-pop")
    assert got.status == 400 and "tls-unique" in got.text, got
    tls13 = world.client(user="pop-2", password=password)
    got13 = tls13.request("POST", "simpleenroll", lambda b: _bound_csr("pop.internal", b),
                          label="est-pop")
    assert got13.status == 400 and "TLS 1.2" in got13.text, got13
    assert world.count() == before


# -- mutual TLS with trust anchors -----------------------------------------------------------


def test_ok_simpleenroll_with_factory_certificate(world: World, tmp_path: Path) -> None:
    cert, k = world.factory.leaf("idevid-1.internal", tmp_path)
    client = world.client(cert=cert, key=k)
    got = client.enroll(csr(["idevid-1.internal"]), label="est-anchor")
    assert got.status == 200, got
    # Without a label the profile is the one whose anchor issued the certificate.
    assert client.enroll(csr(["idevid-1.internal"])).status == 200


# -- the negative table -----------------------------------------------------------------------


def test_fail_negative_table(world: World, tmp_path: Path) -> None:
    """Each case: the status, and nothing issued."""
    good = world.credential("table", "tls-client")
    once = world.credential("table-once", "tls-client", one_time=True)
    past = FakeClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    expired = world.credential("table-expired", "tls-client", expires=dt.timedelta(days=1),
                               clock=past)
    renew_cert, renew_key = _enrolled(world, tmp_path, "table-renew.internal")
    factory_cert, factory_key = world.factory.leaf("idevid-2.internal", tmp_path)
    stranger_cert, stranger_key = world.stranger.leaf("intruder.internal", tmp_path)
    assert world.client(user="table-once", password=once).enroll(
        csr(["once.internal"])).status == 200

    def client(**kwargs: Any) -> EstClient:
        return world.client(**kwargs)

    ok_csr = csr(["fine.internal"])
    cases = [
        ("fail/wrong-password", client(user="table", password=good + "x").enroll(ok_csr),
         401),
        ("fail/unknown-user", client(user="nobody", password=good).enroll(ok_csr), 401),
        ("fail/no-credentials", client().enroll(ok_csr), 401),
        ("fail/one-time-used-twice",
         client(user="table-once", password=once).enroll(csr(["once2.internal"])), 401),
        ("fail/expired", client(user="table-expired", password=expired).enroll(ok_csr), 401),
        ("fail/credential-of-another-profile",
         client(user="table", password=good).enroll(ok_csr, label="keygen"), 403),
        ("fail/factory-cert-at-another-profile",
         client(cert=factory_cert, key=factory_key).enroll(csr(["idevid-2.internal"]),
                                                           label="tls-client"), 401),
        ("fail/reenroll-different-subject",
         client(cert=renew_cert, key=renew_key).enroll(
             csr(["other.internal"], cn="other.internal"), operation="simplereenroll"), 403),
        ("fail/reenroll-without-client-certificate",
         client(user="table", password=good).enroll(ok_csr, operation="simplereenroll"), 403),
        ("fail/names-outside-profile",
         client(user="table", password=good).enroll(csr(["www.example.com"])), 403),
        ("fail/weak-key-rsa1024",
         client(user="table", password=good).enroll(csr(["weak.internal"],
                                                        private_key=key("rsa1024"))), 403),
        ("fail/garbage-body",
         client(user="table", password=good).enroll(b"this is not a CSR\n"), 400),
        ("fail/wrong-content-type",
         client(user="table", password=good).enroll(ok_csr, content_type="text/plain"), 415),
        ("fail/no-content-type",
         client(user="table", password=good).enroll(ok_csr, content_type=None), 415),
        ("fail/oversized-body",
         client(user="table", password=good).enroll(b"A" * (300 * 1024)), 413),
        ("fail/serverkeygen-not-allowed",
         client(user="table", password=good).enroll(ok_csr, operation="serverkeygen"), 403),
        ("fail/unknown-label",
         client(user="table", password=good).enroll(ok_csr, label="nope"), 404),
        ("fail/unknown-operation", client().request("GET", "fullcmc"), 404),
        ("fail/get-simpleenroll", client().request("GET", "simpleenroll"), 405),
    ]
    before = world.count()
    problems = []
    for name, got, status in cases:
        if got.status != status:
            problems.append(f"{name}: {got.status} {got.text!r} (expected {status})")
        if status == 401 and got.headers.get("www-authenticate") != 'Basic realm="certwright EST"':
            problems.append(f"{name}: no WWW-Authenticate: {got.headers}")
        if "Traceback" in got.text or not got.text.strip():
            problems.append(f"{name}: body {got.text!r}")
    # Stranger's certificate: the handshake itself is refused (server/tls.py).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client(cert=stranger_cert, key=stranger_key).enroll(csr(["intruder.internal"]))
    assert not problems, "\n".join(problems)
    assert world.count() == before
    wrong = next(c[1] for c in cases if c[0] == "fail/wrong-password")
    unknown = next(c[1] for c in cases if c[0] == "fail/unknown-user")
    assert wrong.body == unknown.body  # an unknown name looks like a wrong password


def test_ok_failed_authentications_are_audited(world: World) -> None:
    password = world.credential("audited", "tls-client")
    world.client(user="audit-nobody", password="x").enroll(csr(["fine.internal"]))
    world.client(user="audited", password=password + "x").enroll(csr(["fine.internal"]))
    proc = run("audit", "export", "--data", str(world.served.data), check=True)
    failed = {r["subject"]: r for r in map(json.loads, proc.stdout.splitlines())
              if r["event"] == "est.auth.failed"}
    assert failed["audit-nobody"]["data"]["reason"] == "unknown credential"
    assert failed["audited"]["data"]["reason"] == "wrong password"
    assert failed["audited"]["actor"] == "est-client:127.0.0.1"
    assert password not in proc.stdout


def test_ok_credential_cli_list_and_remove(world: World) -> None:
    data = str(world.served.data)
    run("est", "credential", "add", "cli-temp", "--profile", "device", "--one-time",
        "--expires", "7d", "--data", data, check=True)
    listed = run("est", "credential", "list", "--data", data, check=True).stdout
    assert re.search(r"^cli-temp\s+device\s+one-time\s+\d{4}-", listed, re.M), listed
    assert "password" not in listed and "scrypt" not in listed
    run("est", "credential", "remove", "cli-temp", "--data", data, check=True)
    assert "cli-temp" not in run("est", "credential", "list", "--data", data).stdout
    again = run("est", "credential", "remove", "cli-temp", "--data", data)
    assert again.returncode != 0 and "no EST credential named 'cli-temp'" in again.stderr
    bad = run("est", "credential", "add", "x", "--profile", "est-anchor", "--data", data)
    assert bad.returncode != 0 and "does not accept EST credentials" in bad.stderr


def test_ok_clients_without_certificate_served_as_before(world: World) -> None:
    """CERT_OPTIONAL: a client that sends no certificate is served as before, under TLS
    1.2 and 1.3 (ACME clients: tests/acme/test_acme_interop.py)."""
    for version in ("--tlsv1.2 --tls-max 1.2", "--tlsv1.3"):
        got = curl(f"https://127.0.0.1:{world.port}/health", "--cacert",
                   str(world.served.root_pem), *version.split())
        assert (got.status, got.body) == (200, b'{"status":"ok"}'), (version, got)


# -- the negative table through the agent's EST client ---------------------------------------


def test_fail_negative_table_through_the_agents_client(world: World, tmp_path: Path) -> None:
    """The agent's own RFC 7030 client (certwright.agent.issuers.EstClient), as `agent
    enroll` uses it, against the server: each refusal surfaces as the HTTP status in the
    agent's error (or, for a foreign client certificate, as the refused handshake), and
    nothing is issued. Bodies the agent never sends (garbage, a wrong Content-Type, an
    oversized one) go through the client's own authenticated HTTP session."""
    from certwright.agent.issuers import EstClient as AgentEstClient
    from certwright.agent.spec import EstIssuer
    from certwright.errors import CertwrightError

    good = world.credential("agent-table", "tls-client")
    once = world.credential("agent-once", "tls-client", one_time=True)
    past = FakeClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    expired = world.credential("agent-expired", "tls-client", expires=dt.timedelta(days=1),
                               clock=past)
    renew_cert, renew_key = _enrolled(world, tmp_path, "agent-renew.internal")
    stranger_cert, stranger_key = world.stranger.leaf("agent-intruder.internal", tmp_path)

    def agent_client(user: str | None = None, password: str | None = None,
                     cert: Path | None = None, key_file: Path | None = None) -> AgentEstClient:
        fields: dict[str, Any] = {"url": f"https://localhost:{world.port}",
                                  "label": "tls-client", "tls_trust": str(world.served.root_pem),
                                  "pending_timeout": "5s"}
        if user is not None:
            secret = tmp_path / f"{user}.password"
            secret.write_text(f"{password}\n")
            fields.update(username=user, password_file=str(secret))
        if cert is not None:
            fields.update(client_cert=str(cert), client_key=str(key_file))
        return AgentEstClient(EstIssuer.model_validate(fields))

    def refused(client: AgentEstClient, request: x509.CertificateSigningRequest,
                current: tuple[Path, Path] | None = None) -> str:
        names = [str(n) for n in request.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]
        with pytest.raises(CertwrightError) as e:
            client.obtain(request, names, current)
        return str(e.value)

    once_client = agent_client("agent-once", once)
    once_client.obtain(csr(["agent-once.internal"]), ["agent-once.internal"], None)
    before = world.count()
    ok_csr = csr(["agent-fine.internal"])
    cases = [
        ("fail/wrong-password", refused(agent_client("agent-table", good + "x"), ok_csr), 401),
        ("fail/unknown-user", refused(agent_client("nobody", good), ok_csr), 401),
        ("fail/one-time-used-twice", refused(once_client, csr(["agent-once2.internal"])), 401),
        ("fail/expired", refused(agent_client("agent-expired", expired), ok_csr), 401),
        ("fail/reenroll-different-subject",
         refused(agent_client(), csr(["other.internal"], cn="other.internal"),
                 current=(renew_key, renew_cert)), 403),
        ("fail/names-outside-profile",
         refused(agent_client("agent-table", good), csr(["www.example.com"])), 403),
        ("fail/weak-key-rsa1024",
         refused(agent_client("agent-table", good),
                 csr(["agent-weak.internal"], private_key=key("rsa1024"))), 403),
    ]
    problems = [f"{name}: {said!r} (expected HTTP {status})" for name, said, status in cases
                if f"HTTP {status}" not in said]
    # Bodies the agent never sends, through its client's session (Basic auth and all).
    raw = agent_client("agent-table", good)
    url = f"{raw.base}/simpleenroll"
    der = base64.encodebytes(ok_csr.public_bytes(serialization.Encoding.DER))
    with raw._http(None) as http:
        for name, body, ctype, status in [
            ("fail/garbage-body", b"this is not a CSR\n", "application/pkcs10", 400),
            ("fail/wrong-content-type", der, "text/plain", 415),
            ("fail/oversized-body", b"A" * (300 * 1024), "application/pkcs10", 413),
        ]:
            got = http.post(url, content=body, headers={"Content-Type": ctype})
            if got.status_code != status:
                problems.append(f"{name}: {got.status_code} {got.text!r} (expected {status})")
    # A client certificate from a CA the server does not know: the handshake is refused.
    foreign = refused(agent_client(cert=stranger_cert, key_file=stranger_key),
                      csr(["agent-intruder.internal"]))
    if "HTTP" in foreign or "EST https://" not in foreign:
        problems.append(f"fail/foreign-client-certificate: {foreign!r}")
    assert not problems, "\n".join(problems)
    assert world.count() == before, "a refused request issued a certificate"
