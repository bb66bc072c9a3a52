"""The agent's EST client (RFC 7030) against an EST server on loopback, and what the agent
does when a CA issues other names than it asked for.

certwright's own EST front-end is being written beside the agent; until it can be served,
the peer here is a small RFC 7030 server written for these tests (an HTTPS server in a
thread): Basic authentication, a first answer of 202 with Retry-After (pending), base64
PKCS#7 certs-only answers, /cacerts, and simplereenroll authenticated with the client's
current certificate. Its signer can be told to add a name to every certificate, as a CA
template does: the failure the agent's check before install exists for.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from tests.agent_support import (
    assert_pair_matches,
    key_leak_forms,
    run_agent,
    safe_directory,
    status,
    write_spec,
)

USER, PASSWORD = "agent-host", "s3cret-bootstrap"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclasses.dataclass
class EstCA:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    sub_key: ec.EllipticCurvePrivateKey
    sub: x509.Certificate

    @classmethod
    def create(cls) -> EstCA:
        now = dt.datetime.now(dt.UTC)
        rk = ec.generate_private_key(ec.SECP256R1())
        root = (x509.CertificateBuilder().subject_name(_name("EST test root"))
                .issuer_name(_name("EST test root")).public_key(rk.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(rk.public_key()),
                               critical=False)
                .sign(rk, hashes.SHA256()))
        sk = ec.generate_private_key(ec.SECP256R1())
        sub = (x509.CertificateBuilder().subject_name(_name("EST test issuing CA"))
               .issuer_name(root.subject).public_key(sk.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(sk.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   rk.public_key()), critical=False)
               .sign(rk, hashes.SHA256()))
        return cls(rk, root, sk, sub)

    def leaf(self, public_key: Any, names: list[str]) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.sub.subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=7))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in names]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.sub_key.public_key()), critical=False)
                .sign(self.sub_key, hashes.SHA256()))


@dataclasses.dataclass
class EstServer:
    ca: EstCA
    port: int
    extra_name: str | None = None  # a "template" that adds this name to every certificate
    bodies: list[bytes] = dataclasses.field(default_factory=list)
    operations: list[str] = dataclasses.field(default_factory=list)
    pending: set[bytes] = dataclasses.field(default_factory=set)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


def _certs_only(certs: list[x509.Certificate]) -> bytes:
    return base64.encodebytes(pkcs7.serialize_certificates(certs, serialization.Encoding.DER))


def _handler(srv: EstServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/.well-known/est/cacerts":
                self._send(200, _certs_only([srv.ca.sub, srv.ca.root]),
                           "application/pkcs7-mime")
            else:
                self._send(404)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            srv.bodies.append(body)
            op = self.path.rsplit("/", 1)[-1]
            srv.operations.append(op)
            if op == "simpleenroll":
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self._send(401, b"authentication required",
                               headers={"WWW-Authenticate": 'Basic realm="est"'})
                    return
            elif op == "simplereenroll":
                # RFC 7030 4.2.2: authenticated by the certificate being renewed.
                peer = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
                if not peer:
                    self._send(401, b"client certificate required")
                    return
            else:
                self._send(404)
                return
            if self.headers.get("Content-Type") != "application/pkcs10":
                self._send(415)
                return
            csr = x509.load_der_x509_csr(base64.b64decode(body))
            if body not in srv.pending:  # RFC 7030 4.2.3: pending once, then issued
                srv.pending.add(body)
                self._send(202, b"", headers={"Retry-After": "1"})
                return
            names = list(csr.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
            if srv.extra_name:
                names.append(srv.extra_name)
            leaf = srv.ca.leaf(csr.public_key(), names)
            self._send(200, _certs_only([leaf]), "application/pkcs7-mime; smime-type=certs-only")

    return Handler


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstServer]:
    base = tmp_path_factory.mktemp("est")
    ca = EstCA.create()
    tls_key = ec.generate_private_key(ec.SECP256R1())
    tls_cert = ca.leaf(tls_key.public_key(), ["localhost"])
    (base / "tls.pem").write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM)
                                   + ca.sub.public_bytes(serialization.Encoding.PEM))
    (base / "tls.key").write_bytes(tls_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(base / "tls.pem", base / "tls.key")
    (base / "root.pem").write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    ctx.load_verify_locations(base / "root.pem")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(
        EstServer(ca, 0)))
    srv = EstServer(ca, httpd.server_address[1])
    httpd.RequestHandlerClass = _handler(srv)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclasses.dataclass
class Host:
    root: Path
    anchor: Path

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def out(self, name: str) -> Path:
        return self.root / "out" / name


@pytest.fixture
def host(est: EstServer) -> Iterator[Host]:
    with safe_directory() as root:
        (root / "specs").mkdir()
        anchor = root / "root.pem"
        anchor.write_bytes(est.ca.root.public_bytes(serialization.Encoding.PEM))
        (root / "password").write_text(PASSWORD + "\n")
        yield Host(root, anchor)


def est_spec(host: Host, est: EstServer, name: str, names: list[str]) -> dict[str, Any]:
    out = host.out(name)
    out.mkdir(parents=True)
    doc = {
        "name": name,
        "issuer": {"est": {"url": est.url, "username": USER,
                           "password_file": str(host.root / "password"),
                           "tls_trust": str(host.anchor)}},
        "names": [{"static": names}],
        "output": {"directory": str(out), "fullchain": "fullchain.pem"},
        "trust_anchor": str(host.anchor),
    }
    write_spec(host.specs, doc)
    return doc


def test_ok_est_basic_auth_pending_then_issued_then_reenroll(est: EstServer, host: Host
                                                            ) -> None:
    est_spec(host, est, "dev", ["dev.est.test"])
    est.operations.clear()
    first = run_agent(host.specs, host.state, "enroll", "dev")
    assert first.returncode == 0, first.stderr
    assert "EST request pending; asking again in 1 s" in first.stderr
    cert = assert_pair_matches(host.out("dev"))
    chain = x509.load_pem_x509_certificates((host.out("dev") / "fullchain.pem").read_bytes())
    assert chain == [cert, est.ca.sub]  # the intermediate from /cacerts, not the root
    row = status(host.specs, host.state)["dev"]
    assert (row["protocol"], row["validation"], row["account"]) == ("est", "est basic", USER)
    # 7-day certificate: renewal when half of it is left, minus at most 2% jitter.
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    at = dt.datetime.fromisoformat(row["next_renewal"])
    half = cert.not_valid_before_utc + life / 2
    assert half - life * 0.02 <= at <= half
    # Renewal: simplereenroll, authenticated by the current certificate over TLS.
    again = run_agent(host.specs, host.state, "enroll", "dev")
    assert again.returncode == 0, again.stderr
    assert est.operations[-1] == "simplereenroll"
    assert assert_pair_matches(host.out("dev")).serial_number != cert.serial_number
    key_forms = key_leak_forms((host.out("dev") / "privkey.pem").read_bytes())
    for body in est.bodies:
        assert all(f.encode() not in body for f in key_forms)
    assert all(f not in again.stderr + again.stdout for f in key_forms)


def test_fail_issued_names_differ_old_files_untouched(est: EstServer, host: Host) -> None:
    est_spec(host, est, "wrong", ["wrong.est.test"])
    ok = run_agent(host.specs, host.state, "enroll", "wrong")
    assert ok.returncode == 0, ok.stderr
    out = host.out("wrong")
    before = {p.name: p.read_bytes() for p in (out / ".certwright" / "wrong" / "live").iterdir()}
    old_serial = assert_pair_matches(out).serial_number
    est.extra_name = "surprise.est.test"
    try:
        proc = run_agent(host.specs, host.state, "enroll", "wrong")
    finally:
        est.extra_name = None
    assert proc.returncode == 1
    message = ("the certificate's names differ from the spec's; not derived by the spec: "
               "dns:surprise.est.test (rule check.names)")
    assert message in proc.stdout
    after = {p.name: p.read_bytes() for p in (out / ".certwright" / "wrong" / "live").iterdir()}
    assert after == before
    assert assert_pair_matches(out).serial_number == old_serial
    row = status(host.specs, host.state)["wrong"]
    assert row["last_error"] == message and row["serial"] == f"{old_serial:x}"
    plan = run_agent(host.specs, host.state, "plan", "--json", "wrong")
    assert json.loads(plan.stdout)[0]["due"] is False  # waits for its retry


def test_fail_est_wrong_password(est: EstServer, host: Host) -> None:
    est_spec(host, est, "denied", ["denied.est.test"])
    (host.root / "password").write_text("wrong\n")
    proc = run_agent(host.specs, host.state, "enroll", "denied")
    assert proc.returncode == 1
    assert "/.well-known/est/simpleenroll: HTTP 401: authentication required" in proc.stdout
    assert not (host.out("denied") / "cert.pem").exists()
