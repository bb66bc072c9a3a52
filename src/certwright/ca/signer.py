"""The signing interface. Callers hand over a builder; only a Signer touches a CA key.

A PKCS#11 signer can replace ``SoftwareSigner`` without touching its callers: it needs
only to produce the same three kinds of signed objects for its CA certificate.
"""

from __future__ import annotations

from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp

from certwright.pki.keys import signature_hash


class Signer(Protocol):
    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate whose key this signer holds."""
        ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...

    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse: ...


class SoftwareSigner:
    """A CA key held in process memory, loaded from a 0600 file in the data directory."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes, certificate: x509.Certificate):
        if key.public_key() != certificate.public_key():
            raise ValueError("the CA key does not match the CA certificate")
        self._key = key
        self._cert = certificate
        self._hash = signature_hash(key)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, self._hash)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._key, self._hash)

    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        return builder.sign(self._key, self._hash)

    def __repr__(self) -> str:  # never show key material
        return f"SoftwareSigner({self._cert.subject.rfc4514_string()})"
