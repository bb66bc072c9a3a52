"""The server as clients see it: a real ``certwright serve`` driven with curl and openssl.

One server for the module (``tests/served.py``): health on both listeners, the HTTPS
listener's own certificate and chain, CA certificates and the caIssuers walk, 404s, the
request body limit (declared and chunked), and a second ``serve`` on a port in use.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certwright.ca import datadir
from tests.cli import assert_one_line_error, run
from tests.served import Fetched, Served, curl, free_ports, openssl, serving

pytestmark = pytest.mark.peer("curl")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("server")) as s:
        yield s


def https(served: Served, path: str, *args: str, cacert: Path | None = None) -> Fetched:
    """curl to https://localhost:PORT, "localhost" pinned to 127.0.0.1 (loopback only)."""
    return curl(f"{served.https}{path}", "--resolve", f"localhost:{served.https_port}:127.0.0.1",
                "--cacert", str(cacert or served.root_pem), *args)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# -- health and TLS -----------------------------------------------------------------------


def test_ok_health_http(served: Served) -> None:
    got = curl(f"{served.http}/health")
    assert (got.status, got.content_type) == (200, "application/json"), got
    assert json.loads(got.body) == {"status": "ok"}


def test_ok_https_health_trusting_only_our_root(served: Served) -> None:
    # curl fetches no missing intermediates: this passes only if the server sends one.
    got = https(served, "/health")
    assert got.exit_code == 0, got.stderr
    assert (got.status, json.loads(got.body)) == (200, {"status": "ok"})


def test_ok_https_index_names_root_url(served: Served) -> None:
    got = https(served, "/")
    assert got.status == 200, got
    assert json.loads(got.body)["root"] == f"{served.http}/root.pem"


def test_fail_https_with_another_root(served: Served, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's root")])
    now = dt.datetime.now(dt.UTC)
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(key.public_key()).serial_number(1).not_valid_before(now)
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(key, hashes.SHA256()))
    pem = tmp_path / "other-root.pem"
    pem.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    got = https(served, "/health", cacert=pem)
    assert got.exit_code == 60 and got.status == 0, got  # CURLE_PEER_FAILED_VERIFICATION


def _presented_chain(served: Served) -> tuple[list[x509.Certificate], str]:
    proc = openssl("s_client", "-connect", f"127.0.0.1:{served.https_port}",
                   "-servername", "localhost", "-showcerts", "-CAfile", str(served.root_pem),
                   "-verify_hostname", "localhost", "-verify_return_error", input=b"")
    assert proc.returncode == 0, proc.stderr
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n",
                      proc.stdout, re.S)
    return [x509.load_pem_x509_certificate(p.encode()) for p in pems], proc.stdout


def test_ok_https_presents_localhost_leaf_and_intermediate(served: Served) -> None:
    chain, out = _presented_chain(served)
    assert "Verify return code: 0 (ok)" in out
    assert len(chain) == 2, "the leaf and the issuing CA, not the root"
    leaf, intermediate = chain
    assert der(intermediate) == der(served.issuing)
    assert leaf.issuer == served.issuing.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # The CA stored it like any other certificate (so it is linted at teardown too).
    with datadir.opened(served.data) as ca:
        rec = ca.store.certificate(format(leaf.serial_number, "x"))
    assert rec.profile == "_https-listener" and rec.der == der(leaf)


# -- CA certificates ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["issuing", "root"])
def test_ok_ca_certificate_der(which: str, served: Served) -> None:
    cert_id = served.issuer_id if which == "issuing" else served.root_id
    got = curl(f"{served.http}/ca/{cert_id}.der")
    assert (got.status, got.content_type) == (200, "application/pkix-cert"), got
    pem = served.chain_pem if which == "issuing" else served.root_pem
    assert got.body == der(x509.load_pem_x509_certificate(pem.read_bytes()))
    parsed = openssl("x509", "-inform", "DER", "-noout", "-subject", input=got.body)
    expected = openssl("x509", "-in", str(pem), "-noout", "-subject")
    assert parsed.returncode == 0 and parsed.stdout == expected.stdout


def _ca_issuers_url(cert: x509.Certificate) -> str:
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return next(str(d.access_location.value) for d in aia
                if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS)


def test_ok_ca_issuers_walk_from_listener_cert_to_root(served: Served) -> None:
    """Follow the caIssuers URLs written in the certificates, as a browser would."""
    cert = _presented_chain(served)[0][0]
    walked = []
    while cert.issuer != cert.subject:
        url = _ca_issuers_url(cert)
        assert url.startswith(f"{served.http}/ca/"), url
        got = curl(url)
        assert (got.status, got.content_type) == (200, "application/pkix-cert"), got
        parent = x509.load_der_x509_certificate(got.body)
        cert.verify_directly_issued_by(parent)
        walked.append(parent)
        cert = parent
    root = x509.load_pem_x509_certificate(served.root_pem.read_bytes())
    assert [der(c) for c in walked] == [der(served.issuing), der(root)]


def test_ok_root_pem(served: Served) -> None:
    got = curl(f"{served.http}/root.pem")
    assert got.status == 200, got
    assert got.body == served.root_pem.read_bytes()


@pytest.mark.parametrize("path", [
    "/nope", "/crl/0123456789abcdef.crl", "/crl/ROOT.crl", "/ca/0123456789abcdef.der",
    "/ca/ISSUER.pem", "/ca/ISSUER", "/crl/ISSUER.der",
])
def test_fail_http_unknown_path_404(path: str, served: Served) -> None:
    # The root publishes no CRL here: the issuing CA is its only child, and offline.
    path = path.replace("ROOT", served.root_id).replace("ISSUER", served.issuer_id)
    got = curl(f"{served.http}{path}")
    assert got.status == 404, (path, got)


@pytest.mark.parametrize("path", ["/nope", "/crl/x.crl", "/ocsp"])
def test_fail_https_unknown_path_404(path: str, served: Served) -> None:
    got = https(served, path)
    assert got.status == 404, got


# -- request body limit -------------------------------------------------------------------

MODES = {
    "declared": [],
    "declared-expect-100": ["-H", "Expect: 100-continue"],
    "chunked": ["-H", "Transfer-Encoding: chunked"],
}


@pytest.mark.parametrize("listener", ["http", "https"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("over", [0, 1], ids=["at-limit", "one-over"])
def test_body_limit(over: int, mode: str, listener: str, served: Served,
                    tmp_path: Path) -> None:
    _, config, _ = datadir.load(served.data)
    body = tmp_path / "body"
    body.write_bytes(b"x" * (config.server.max_body_bytes + over))
    args = ["-v", "-X", "POST", "--data-binary", f"@{body}", *MODES[mode]]
    got = (curl(f"{served.http}/health", *args) if listener == "http"
           else https(served, "/health", *args))
    sent = [line for line in got.stderr.splitlines() if line.startswith("> ")]
    if mode == "chunked":
        assert "> Transfer-Encoding: chunked" in sent and not [
            s for s in sent if s.lower().startswith("> content-length")], sent
    else:
        assert f"> Content-Length: {config.server.max_body_bytes + over}" in sent, sent
    # At the limit the body reaches the application (which allows only GET here).
    assert got.status == (413 if over else 405), got
    if over:
        assert got.body == f"request body larger than {config.server.max_body_bytes} bytes\n".encode()
    # The connection is still fit for use: the server is healthy afterwards.
    assert curl(f"{served.http}/health").status == 200


# -- a second server on a port in use -----------------------------------------------------


@pytest.mark.parametrize("busy", ["http", "https"])
def test_fail_serve_on_port_in_use(busy: str, served: Served) -> None:
    (free,) = free_ports(1)
    http_port, https_port = ((served.http_port, free) if busy == "http"
                             else (free, served.https_port))
    proc = run("serve", "--data", str(served.data), "--http", f"127.0.0.1:{http_port}",
               "--https", f"127.0.0.1:{https_port}", timeout=30)
    busy_port = served.http_port if busy == "http" else served.https_port
    assert_one_line_error(proc, f"--{busy}: cannot listen on 127.0.0.1:{busy_port}",
                          "Address already in use")
    assert proc.returncode == 1
    assert "serving" not in proc.stdout, proc.stdout
    # The running server is untouched, and the port the second one bound is free again.
    assert curl(f"{served.http}/health").status == 200
    assert https(served, "/health").status == 200
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", free))  # released, not left bound by the failed start
