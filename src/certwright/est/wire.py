"""EST wire formats (RFC 7030): certs-only PKCS#7, CSR attributes, the serverkeygen
multipart answer, and the base64 transfer encoding they all travel in.

RFC 7030 4.1.3/4.2.3: answers are base64 (``Content-Transfer-Encoding: base64``); RFC 8951
section 3.2 settles that the body is base64 whatever the header says. We write lines of
64 characters, which ``openssl base64 -d`` and every EST client read.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from cryptography import x509
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5652, rfc7030

from certwright.ca.profiles import Profile
from certwright.est import config as estconfig
from certwright.pki import cms

__all__ = ["CERTS_ONLY", "CSRATTRS", "PKCS8", "PKCS10", "b64_lines", "certs_only",
           "csr_attributes", "media_type", "serverkeygen_multipart"]

PKCS10 = "application/pkcs10"
PKCS8 = "application/pkcs8"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"

# Object identifiers named in CSR attributes (RFC 7030 4.5.2, RFC 9908).
OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"  # noqa: S105 (an OID; carries tls-unique)
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_ED25519 = "1.3.101.112"
CURVE_OIDS = {"P-256": "1.2.840.10045.3.1.7", "P-384": "1.3.132.0.34",
              "P-521": "1.3.132.0.35"}


def media_type(header: str) -> str:
    """The media type of a Content-Type header, lower-case, without parameters."""
    return header.split(";", 1)[0].strip().lower()


def b64_lines(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"".join(text[i:i + 64] + b"\n" for i in range(0, len(text), 64))


def certs_only(certs: Sequence[x509.Certificate]) -> bytes:
    """A certs-only CMC Simple PKI Response (a degenerate SignedData, RFC 5272 4.1), in
    base64 as it goes on the wire."""
    return b64_lines(cms.certs_only(certs))


def _oid(dotted: str) -> univ.ObjectIdentifier:
    return univ.ObjectIdentifier(dotted)


def _attribute(type_oid: str, values: Sequence[univ.Asn1Item]) -> rfc7030.AttrOrOID:
    attr = rfc5652.Attribute()
    attr["attrType"] = _oid(type_oid)
    for i, value in enumerate(values):
        attr["attrValues"][i] = univ.Any(encoder.encode(value))
    choice = rfc7030.AttrOrOID()
    choice["attribute"] = attr
    return choice


def _bare_oid(dotted: str) -> rfc7030.AttrOrOID:
    choice = rfc7030.AttrOrOID()
    choice["oid"] = _oid(dotted)
    return choice


def csr_attributes(profile: Profile) -> bytes:
    """DER CsrAttrs (RFC 7030 4.5.2) saying what ``profile`` wants in a CSR: the
    challengePassword when it binds the CSR to the TLS session (3.5), the key types it
    accepts (id-ecPublicKey with the allowed curves as values; rsaEncryption with the
    minimum modulus size as an INTEGER value; Ed25519), and an extensionRequest naming
    subjectAltName, in the forms of RFC 7030's own example."""
    items: list[rfc7030.AttrOrOID] = []
    if estconfig.profile_settings(profile).tls_unique_pop:
        items.append(_bare_oid(OID_CHALLENGE_PASSWORD))
    keys = profile.keys
    if keys.ecdsa_curves:
        items.append(_attribute(OID_EC_PUBLIC_KEY,
                                [_oid(CURVE_OIDS[c]) for c in keys.ecdsa_curves]))
    if keys.rsa:
        items.append(_attribute(OID_RSA_ENCRYPTION, [univ.Integer(keys.rsa_min_bits)]))
    if keys.ed25519:
        items.append(_bare_oid(OID_ED25519))
    items.append(_attribute(OID_EXTENSION_REQUEST, [_oid(OID_SUBJECT_ALT_NAME)]))
    attrs = rfc7030.CsrAttrs()
    for i, item in enumerate(items):
        attrs[i] = item
    der: bytes = encoder.encode(attrs)
    return der


def serverkeygen_multipart(pkcs8_der: bytes, certificate: x509.Certificate
                           ) -> tuple[bytes, str]:
    """RFC 7030 4.4.2: multipart/mixed, the private key (PKCS#8, unencrypted: no
    DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier was asked for) then the
    certificate as certs-only. Returns (body, Content-Type)."""
    boundary = "est-" + secrets.token_hex(12)
    crlf = b"\r\n"

    def part(content_type: str, body: bytes) -> bytes:
        return (b"--" + boundary.encode() + crlf
                + f"Content-Type: {content_type}".encode() + crlf
                + b"Content-Transfer-Encoding: base64" + crlf + crlf
                + body.replace(b"\n", crlf))

    body = (part(PKCS8, b64_lines(pkcs8_der))
            + part(CERTS_ONLY, certs_only([certificate]))
            + b"--" + boundary.encode() + b"--" + crlf)
    return body, f"multipart/mixed; boundary={boundary}"
