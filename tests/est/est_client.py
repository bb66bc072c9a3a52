"""A small EST client (RFC 7030) for the tests: it sends what it is told to, including
what a well-behaved client never would (that is its purpose). Interop with real peers is
tested with curl and openssl; this one adds what they cannot do from a command line:
computing the tls-unique value of its own connection to put it into the CSR.

One request per connection, over http.client with an ssl context of its own: a root to
trust, optionally a client certificate, optionally TLS 1.2 at most.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import http.client
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

PKCS10 = "application/pkcs10"


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def certificates(self) -> list[x509.Certificate]:
        """The certificates of a base64 certs-only PKCS#7 answer."""
        assert self.headers.get("content-type", "").startswith("application/pkcs7-mime"), self
        return pkcs7.load_der_pkcs7_certificates(base64.b64decode(self.body))

    def keygen_parts(self) -> tuple[bytes, x509.Certificate]:
        """(PKCS#8 DER key, certificate) of a serverkeygen multipart/mixed answer."""
        return keygen_parts(self.headers["content-type"], self.body)


def keygen_parts(content_type: str, body: bytes) -> tuple[bytes, x509.Certificate]:
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP)
    assert message.get_content_type() == "multipart/mixed", content_type
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    assert [p.get_content_type() for p in parts] == ["application/pkcs8",
                                                    "application/pkcs7-mime"], parts
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts)
    assert parts[1].get_param("smime-type") == "certs-only"
    key = parts[0].get_payload(decode=True)
    certs = pkcs7.load_der_pkcs7_certificates(parts[1].get_payload(decode=True))
    assert len(certs) == 1
    return key, certs[0]


def _binding(sock: object) -> bytes | None:
    assert isinstance(sock, ssl.SSLSocket)
    # RFC 5929 tls-unique; undefined for TLS 1.3.
    return sock.get_channel_binding("tls-unique") if sock.version() == "TLSv1.2" else None


class EstClient:
    def __init__(self, port: int, root: Path, *, host: str = "127.0.0.1",
                 cert: Path | None = None, key: Path | None = None,
                 user: str | None = None, password: str | None = None,
                 tls12: bool = False) -> None:
        self.host, self.port = host, port
        self.context = ssl.create_default_context(cafile=str(root))
        if tls12:
            self.context.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            self.context.load_cert_chain(str(cert), str(key) if key else None)
        self.user, self.password = user, password

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def request(self, method: str, operation: str, body: bytes | Callable[[bytes | None], bytes]
                = b"", *, label: str | None = None, content_type: str | None = PKCS10
                ) -> Answer:
        """``body`` may be a function of the connection's tls-unique value (None under
        TLS 1.3), called once the handshake is done."""
        path = "/.well-known/est/" + (f"{label}/" if label else "") + operation
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=20)
        try:
            conn.connect()
            if callable(body):
                assert conn.sock is not None
                body = body(_binding(conn.sock))
            conn.request(method, path, body=body or None,
                         headers=self._headers(content_type if method == "POST" else None))
            response = conn.getresponse()
            return Answer(response.status,
                          {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def session_binding(self) -> bytes | None:
        """The tls-unique value of a connection made and closed (None under TLS 1.3)."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=20)
        try:
            conn.connect()
            assert conn.sock is not None
            return _binding(conn.sock)
        finally:
            conn.close()

    def enroll(self, csr: x509.CertificateSigningRequest | bytes, *,
               operation: str = "simpleenroll", label: str | None = None,
               content_type: str | None = PKCS10) -> Answer:
        body = csr if isinstance(csr, bytes) else base64.encodebytes(
            csr.public_bytes(serialization.Encoding.DER))
        return self.request("POST", operation, body, label=label, content_type=content_type)
