"""The agent's tls-alpn-01 responder (RFC 8737; RFC 8738 for addresses), looked at with
``openssl s_client`` and Python's TLS client; the end-to-end validation by a real ACME
server is in test_agent_acme.py."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509

from certwright.agent import tlsalpn
from tests.served import free_ports, openssl

DIGEST = hashlib.sha256(b"token.thumbprint").digest()
ADDRESS = "10.0.0.7"


@pytest.fixture(scope="module")
def responder() -> Iterator[int]:
    (port,) = free_ports(1)
    with tlsalpn.responding(f"127.0.0.1:{port}", {("dns", "alpn.example.test"): DIGEST,
                                                  ("ip", ADDRESS): DIGEST}):
        yield port


def _handshake(port: int, sni: str | None, alpn: list[str] | None
               ) -> tuple[str | None, x509.Certificate]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return tls.selected_alpn_protocol(), x509.load_der_x509_certificate(der)


def test_ok_openssl_sees_acme_tls_1_and_the_validation_certificate(responder: int) -> None:
    proc = openssl("s_client", "-connect", f"127.0.0.1:{responder}", "-servername",
                   "alpn.example.test", "-alpn", "acme-tls/1")
    assert "ALPN protocol: acme-tls/1" in proc.stdout, proc.stdout
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", proc.stdout,
                    re.S)
    assert pem is not None
    cert = x509.load_pem_x509_certificate(pem.group(0).encode())
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) \
        == [x509.DNSName("alpn.example.test")]
    ext = cert.extensions.get_extension_for_oid(tlsalpn.ACME_IDENTIFIER)
    assert ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + DIGEST  # OCTET STRING (SIZE (32))


def test_ok_ip_identifier_by_reverse_name(responder: int) -> None:
    """RFC 8738 6: the SNI is the address's reverse-DNS name; the certificate names the
    address in an iPAddress."""
    sni = ipaddress.ip_address(ADDRESS).reverse_pointer
    alpn, cert = _handshake(responder, sni, ["acme-tls/1"])
    assert alpn == "acme-tls/1"
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) \
        == [x509.IPAddress(ipaddress.ip_address(ADDRESS))]


@pytest.mark.parametrize(("case", "sni"), [
    ("fail/unknown-name", "other.example.test"),
    ("fail/no-sni", None),
])
def test_fail_handshake_for_a_name_no_challenge_names(responder: int, case: str,
                                                      sni: str | None) -> None:
    with pytest.raises(ssl.SSLError):
        _handshake(responder, sni, ["acme-tls/1"])
