"""CMS (RFC 5652) structures the front-ends send: today the certs-only message, a
SignedData with certificates and no signers (EST cacerts and simpleenroll answers, SCEP
GetCACert and CertRep contents). SignedData and EnvelopedData with real signers and
recipients come with SCEP. Pure functions over DER: the wire encoding (base64, MIME
parts) is each protocol's.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

__all__ = ["certs_only"]


def certs_only(certs: Sequence[x509.Certificate]) -> bytes:
    """The DER of a certs-only CMS message: a degenerate SignedData carrying ``certs``
    and no signerInfos (RFC 5652 5; the CMC Simple PKI Response of RFC 5272 4.1)."""
    if not certs:
        # RFC 5272 4.1: a Simple PKI Response carries at least one certificate.
        raise ValueError("a certs-only message carries at least one certificate")
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)
