"""Mutual TLS on the HTTPS listener, and the TLS facts each request's ASGI scope carries.

uvicorn does not put the peer certificate into the scope. ``TlsHttpToolsProtocol`` adds
the ASGI TLS extension (``scope["extensions"]["tls"]``: ``client_cert_chain`` as PEM
strings, ``tls_version`` as the IANA number, ...), read once per connection from the
``ssl_object`` after the handshake, plus ``scope["extensions"]["certwright.tls"]`` with
what the extension has no field for: the DER client certificate and the tls-unique
channel binding (RFC 5929) when the connection is TLS 1.2.

``request_client_certificates`` makes the listener ask for a client certificate without
requiring one (``CERT_OPTIONAL``), verified against our root and issuing CA and every
profile's ``est.client_trust_anchors``. What that means for clients:

- no certificate (ACME clients, curl without --cert): the handshake goes on as before;
- a certificate that chains to one of those anchors: accepted, and the application
  decides what it may do (EST checks the anchors of the profile it is asked for);
- a certificate from any other CA: OpenSSL refuses the handshake (alert unknown_ca).
  Python's ssl module has no verify callback, so the listener cannot take such a
  certificate and leave the refusal to the application; the client sees a TLS error
  instead of an HTTP status. Under TLS 1.3 the client may notice only when it reads
  its first response, since the server checks the certificate after the client has
  finished its side of the handshake.

OpenSSL checks a client certificate's purpose too: one whose extendedKeyUsage lacks
clientAuth (a tls-server certificate, say) fails the handshake as well, so such
certificates cannot authenticate EST re-enrollment; profiles meant for it issue
clientAuth (tls-client, device).

Only the client's own certificate is available (Python < 3.13 has no
``get_verified_chain``), so ``client_cert_chain`` holds just that one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["TLS_VERSIONS", "TlsHttpToolsProtocol", "connection_tls",
           "request_client_certificates"]

# ASGI TLS extension: tls_version is the TLS version number of the IANA registry.
TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def request_client_certificates(context: ssl.SSLContext,
                                anchors: Iterable[x509.Certificate]) -> None:
    """Ask every client for a certificate, verified against ``anchors``; none required."""
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in anchors)
    context.load_verify_locations(cadata=pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    # The peer certificate is read once per connection: a TLS 1.2 renegotiation must not
    # change it under the requests that follow.
    context.options |= ssl.OP_NO_RENEGOTIATION


def connection_tls(transport: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the ASGI "tls" extension, our "certwright.tls" extension) of a connection, or
    None for plain TCP."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    version = ssl_object.version()
    der = ssl_object.getpeercert(binary_form=True)
    tls_unique = None
    if version == "TLSv1.2":
        # RFC 5929 tls-unique is defined up to TLS 1.2 only (RFC 9266 replaces it with
        # tls-exporter for TLS 1.3, which Python's ssl module does not expose).
        tls_unique = ssl_object.get_channel_binding("tls-unique")
    asgi = {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        # Verification failures end the handshake (CERT_OPTIONAL), so a certificate that
        # is here was verified.
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(version or ""),
        "cipher_suite": None,  # Python gives the suite's name, not its number
    }
    ours = {"client_cert_der": der, "tls_unique": tls_unique, "version": version}
    return asgi, ours


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the TLS extension in every request's scope."""

    _tls: tuple[dict[str, Any], dict[str, Any]] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # asyncio calls this once the TLS handshake is complete.
        self._tls = connection_tls(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            asgi, ours = self._tls
            # Copies: an application may change its scope, not the next request's.
            extensions: dict[str, dict[object, object]] = {
                "tls": dict(asgi.items()), "certwright.tls": dict(ours.items())}
            self.scope["extensions"] = extensions
