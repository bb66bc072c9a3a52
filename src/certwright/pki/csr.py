"""PKCS#10 certification requests: decoding in the forms clients send, and proof of possession."""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from certwright.errors import CertwrightError, ErrorKind
from certwright.pki.names import Names, from_general_names

MAX_CSR_BYTES = 64 * 1024

_PEM = re.compile(
    rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----(.+?)-----END (?:NEW )?CERTIFICATE REQUEST-----",
    re.S,
)


def _bad(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.BAD_CSR, detail)


def decode(data: bytes) -> bytes:
    """Return the DER of a CSR given as PEM, DER, or base64 (line-wrapped or not).

    EST (RFC 7030 4.2.1) sends base64 without PEM armour; clients wrap it at 64 or 76
    columns, with CRLF or LF; all are accepted.
    """
    if len(data) > MAX_CSR_BYTES:
        raise CertwrightError(
            ErrorKind.MALFORMED, f"CSR is larger than {MAX_CSR_BYTES} bytes"
        )
    if data[:1] == b"\x30":  # a DER SEQUENCE; base64 of a CSR starts with "MI"
        return data
    stripped = data.strip()
    if not stripped:
        raise CertwrightError(ErrorKind.MALFORMED, "CSR is empty")
    m = _PEM.search(stripped)
    body = m.group(1) if m else stripped
    if b"-----BEGIN" in body:
        raise CertwrightError(ErrorKind.MALFORMED, "PEM block is not a CERTIFICATE REQUEST")
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CertwrightError(
            ErrorKind.MALFORMED, "CSR is neither DER, PEM nor base64"
        ) from None


def load(data: bytes) -> x509.CertificateSigningRequest:
    """Decode a CSR and verify its self-signature (the proof of possession of the key).

    Raises CertwrightError: MALFORMED when it cannot be parsed, BAD_CSR when its
    signature does not verify.
    """
    der = decode(data)
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise CertwrightError(ErrorKind.MALFORMED, "CSR is not valid DER PKCS#10") from None
    try:
        valid = csr.is_signature_valid
    except Exception:  # unsupported signature algorithm or key inside a parseable CSR
        raise _bad("CSR signature algorithm is not supported") from None
    if not valid:
        raise _bad("CSR signature does not verify: no proof of possession of the private key")
    return csr


def requested_names(csr: x509.CertificateSigningRequest) -> Names:
    """The names in the CSR's subjectAltName extension request (empty if there is none)."""
    try:
        ext = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return Names()
    except ValueError:
        raise _bad("CSR extensions cannot be parsed") from None
    value = ext.value
    if not isinstance(value, x509.SubjectAlternativeName):
        raise _bad("CSR subjectAltName extension is malformed")
    return from_general_names(value)
