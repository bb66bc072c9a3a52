"""pkilint over certificates: the RFC 5280 linter and the CA/B Forum server-auth linter.

Used by the tests on every certificate they see, and by the Authority before signing
when ``issuance.lint`` is on: ``Linter`` lints the to-be-signed certificate signed by a
throwaway key of the CA key's algorithm (Boulder's way), so a certificate that fails is
never signed by the CA key, and the CA key signs each certificate exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from certwright.errors import CertwrightError, ErrorKind
from certwright.pki.keys import signature_hash

# Findings a private CA expects from the CA/B server-auth linter: internal names and
# private addresses are what it is for, and it asserts no CA/B policy OID unless the
# profile says so.
PRIVATE_CA_ALLOWED = frozenset({
    "cabf.internal_domain_name",
    "cabf.internal_ip_address",
    "cabf.serverauth.subscriber.certificate_policies_extension_absent",
})


# pkilint checks dNSName syntax with ``validators.domain``, which wants at least two
# labels. RFC 5280 4.2.1.6 asks for RFC 1034 3.5's preferred name syntax, which a single
# label ("localhost", the server's default HTTPS name) satisfies; CA/B's objection to
# such internal names is cabf.internal_domain_name, allowed above. Only that case of the
# finding is dropped: any other syntax error in a name still fails.
_SINGLE_LABEL_FINDING = re.compile(
    r'Invalid domain name syntax: "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"')
# A wildcard dNSName ("*.example") is not RFC 1034 syntax either; for server-auth
# certificates pkilint's own CA/B profile drops this pkix finding and judges wildcards
# with its CA/B rules instead (serverauth_finding_filter). We do the same, and only when
# what follows "*." is a valid domain name.
_WILDCARD_FINDING = re.compile(r'Invalid domain name syntax: "\*\.([^"*]+)"')


def _wildcard_with_valid_base(message: str) -> bool:
    import validators  # type: ignore[import-untyped]  # pkilint's own dependency

    m = _WILDCARD_FINDING.fullmatch(message)
    return m is not None and validators.domain(m.group(1)) is True


@dataclasses.dataclass(frozen=True)
class Finding:
    linter: str
    code: str
    severity: str
    message: str | None

    def __str__(self) -> str:
        extra = f": {self.message}" if self.message else ""
        return f"{self.linter} {self.severity} {self.code}{extra}"


def available() -> bool:
    try:
        import pkilint  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _validators() -> tuple[Any, Any, Any]:
    from pkilint.cabf import serverauth
    from pkilint.cabf.serverauth import serverauth_constants
    from pkilint.pkix import certificate, extension, name

    pkix = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )
    dv = serverauth_constants.CertificateType.DV_FINAL_CERTIFICATE
    cabf = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(), serverauth.create_validators(dv)
    )
    filters = serverauth.create_serverauth_finding_filters(dv)
    return pkix, cabf, filters


def _findings(linter: str, results: Any, threshold: Any, *, server_auth: bool = False
              ) -> list[Finding]:
    out = []
    for result in results:
        for fd in result.finding_descriptions:
            if fd.finding.code == "pkix.invalid_domain_name_syntax" and (
                    _SINGLE_LABEL_FINDING.fullmatch(fd.message or "")
                    or (server_auth and _wildcard_with_valid_base(fd.message or ""))):
                continue
            if fd.finding.severity <= threshold:
                out.append(Finding(linter, fd.finding.code, fd.finding.severity.name,
                                   fd.message))
    return out


def lint_certificate(der: bytes, *, server_auth: bool) -> list[Finding]:
    """ERROR-or-worse findings for ``der``; with ``server_auth`` the CA/B DV linter too."""
    from pkilint import finding_filter, loader
    from pkilint.validation import ValidationFindingSeverity

    pkix, cabf, filters = _validators()
    doc = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    findings = _findings("pkix", pkix.validate(doc.root), ValidationFindingSeverity.ERROR,
                         server_auth=server_auth)
    if server_auth:
        doc = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
        results, _ = finding_filter.filter_results(filters, cabf.validate(doc.root))
        findings += _findings("cabf-serverauth", results, ValidationFindingSeverity.ERROR)
    return findings


def _throwaway_key(like: CertificatePublicKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    """A key of the same algorithm and size as ``like``: a certificate it signs carries
    the same signature AlgorithmIdentifier (in the TBS too, RFC 5280 4.1.2.3) as one the
    CA key signs, so the TBS linted is byte for byte the TBS the CA signs after."""
    if isinstance(like, rsa.RSAPublicKey):
        return rsa.generate_private_key(65537, like.key_size)
    if isinstance(like, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(like.curve)
    if isinstance(like, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    raise CertwrightError(ErrorKind.INTERNAL,
                          f"cannot lint for a CA key of type {type(like).__name__}")


class Linter:
    """Lints to-be-signed certificates for one CA key, before the CA key signs them."""

    def __init__(self, ca_public_key: CertificatePublicKeyTypes) -> None:
        self._ca_public_key = ca_public_key
        self._key: CertificateIssuerPrivateKeyTypes | None = None  # made on first use

    def check(self, builder: x509.CertificateBuilder, *, server_auth: bool) -> bytes:
        """Lint ``builder``'s certificate; return the DER of the TBSCertificate linted.

        Raises CertwrightError (INTERNAL: the CA's own profile produced it, not the
        requester) naming every ERROR-or-worse finding a private CA does not expect.
        """
        if self._key is None:
            self._key = _throwaway_key(self._ca_public_key)
        draft = builder.sign(self._key, signature_hash(self._key))
        findings = [
            f for f in lint_certificate(draft.public_bytes(serialization.Encoding.DER),
                                        server_auth=server_auth)
            if f.code not in PRIVATE_CA_ALLOWED
        ]
        if findings:
            raise CertwrightError(
                ErrorKind.INTERNAL,
                "the certificate failed linting and was not signed: "
                + "; ".join(str(f) for f in findings),
            )
        return draft.tbs_certificate_bytes
