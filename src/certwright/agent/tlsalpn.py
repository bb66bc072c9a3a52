"""tls-alpn-01 (RFC 8737) for the agent: the challenge type for certbot's ``acme`` library
(which dropped its own in 3.0) and a TLS listener that answers it.

RFC 8737 3: the client "MUST use the ACME-TLS/1 ALPN protocol", and serves "a
self-signed certificate [with] a subjectAltName extension containing the dNSName being
validated" (RFC 8738 6: for an IP identifier, the address in an iPAddress, reached with
the reverse-DNS name as SNI) "and an acmeIdentifier extension", critical, holding "the
SHA-256 digest of the key authorization" as an OCTET STRING.

The listener picks the validation certificate by SNI (one context per identifier, so one
listener serves every pending authorization of an order) and closes each connection
after the handshake: RFC 8737 3 says the client "MUST NOT exchange any further data".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from josepy.jwk import JWK

from certwright.errors import CertwrightError, ErrorKind

log = logging.getLogger("certwright.agent")

ALPN = "acme-tls/1"
# RFC 8737 6.1: id-pe-acmeIdentifier.
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
HANDSHAKE_TIMEOUT = 10.0


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) response that asks the server to validate: RFC 8555 7.5.1."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **unused: Any) -> bytes:
        """The SHA-256 digest of the key authorization (what acmeIdentifier holds)."""
        return hashlib.sha256(self.key_authorization(account_key).encode()).digest()


def server_name(identifier_type: str, value: str) -> str:
    """The SNI the CA sends: the name itself, or for an address its reverse-DNS name
    (RFC 8738 6)."""
    if identifier_type == "ip":
        return ipaddress.ip_address(value).reverse_pointer
    return value.lower().rstrip(".")


def validation_certificate(identifier_type: str, value: str, digest: bytes,
                           now: dt.datetime | None = None
                           ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A throw-away key and the self-signed certificate RFC 8737 3 describes."""
    if len(digest) != 32:
        raise ValueError("the acmeIdentifier digest is SHA-256: 32 bytes")
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or dt.datetime.now(dt.UTC)
    general: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(value))
                                 if identifier_type == "ip" else x509.DNSName(value))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME tls-alpn-01")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([general]), critical=False)
            # The extension's value is the DER OCTET STRING of the digest
            # (Authorization ::= OCTET STRING (SIZE (32))).
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER,
                                                      b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _context(pair: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None
             ) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # RFC 8737 4: "ACME servers ... MUST only negotiate TLS 1.2 or higher".
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ALPN])
    if pair is not None:
        key, cert = pair
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()) + \
            cert.public_bytes(serialization.Encoding.PEM)
        # The ssl module loads a key from a file only: an anonymous in-memory one where
        # Linux has them (memfd), else a private temporary directory, gone at once.
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("certwright-alpn", os.MFD_CLOEXEC)
            try:
                os.write(fd, pem)
                ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        else:
            with tempfile.TemporaryDirectory(prefix="certwright-alpn-") as d:
                path = Path(d) / "pair.pem"
                path.write_bytes(pem)
                ctx.load_cert_chain(path)
    return ctx


class Responder:
    """A TLS listener answering tls-alpn-01 for the identifiers it was given:
    ``{(type, value): digest}``."""

    def __init__(self, listen: str, answers: Mapping[tuple[str, str], bytes]) -> None:
        host, _, port = listen.rpartition(":")
        self.address = (host.strip("[]"), int(port))
        self.contexts = {server_name(t, v): _context(validation_certificate(t, v, d))
                         for (t, v), d in answers.items()}
        self.default = _context(None)  # no certificate: a handshake without SNI fails
        self.default.sni_callback = self._pick
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def _pick(self, conn: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext
              ) -> int | None:
        ctx = self.contexts.get((name or "").lower().rstrip("."))
        if ctx is None:
            log.warning("tls-alpn-01: a handshake for %r, which no pending challenge names",
                        name)
            return int(ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME)
        conn.context = ctx
        return None

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        try:
            self._sock = socket.create_server(self.address, family=family)
        except OSError as e:
            raise CertwrightError(
                ErrorKind.CONFIG, f"tls-alpn-01 standalone {self.address[0]}:"
                f"{self.address[1]}: {e.strerror}", rule="issuer.acme.challenge") from None
        self._thread = threading.Thread(target=self._serve, name="tls-alpn-01", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.2)
            if not ready:
                continue
            try:
                conn, peer = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handshake, args=(conn, peer), daemon=True,
                             name="tls-alpn-01 handshake").start()

    def _handshake(self, conn: socket.socket, peer: Any) -> None:
        conn.settimeout(HANDSHAKE_TIMEOUT)
        try:
            with self.default.wrap_socket(conn, server_side=True) as tls:
                if tls.selected_alpn_protocol() != ALPN:
                    log.warning("tls-alpn-01: %s did not ask for ALPN %s", peer[0], ALPN)
                else:
                    log.info("tls-alpn-01: answered %s", peer[0])
        except (OSError, ssl.SSLError) as e:
            log.debug("tls-alpn-01: handshake with %s: %s", peer[0], e)
        finally:
            conn.close()


@contextlib.contextmanager
def responding(listen: str, answers: Mapping[tuple[str, str], bytes]) -> Iterator[Responder]:
    responder = Responder(listen, answers)
    responder.start()
    try:
        yield responder
    finally:
        responder.stop()
