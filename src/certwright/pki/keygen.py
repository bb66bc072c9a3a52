"""Server-side key generation: a key pair made for a requester that asked the CA for one
(EST serverkeygen, RFC 7030 4.4; CMP central key generation, RFC 9810, later), and
the request re-made over it. Pure functions: nothing here reads or writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
)

from certwright.errors import CertwrightError, ErrorKind
from certwright.pki import keys
from certwright.pki.keys import KeyAlgorithm

__all__ = ["GeneratedKey", "KeyRules", "key_like", "request_over"]

# What the server generates: the types a profile may allow (keys.describe).
GeneratedKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# The public exponent of every RSA key generated here (RFC 8017 and the CA/B BR 6.1.6
# allow any odd e >= 3; 65537 is the one every implementation expects).
_RSA_EXPONENT = 65537


class KeyRules(Protocol):
    """The key types a profile accepts (``ca.profiles.KeyRules`` has this shape)."""

    @property
    def rsa(self) -> bool: ...
    @property
    def rsa_min_bits(self) -> int: ...
    @property
    def ecdsa_curves(self) -> Sequence[str]: ...
    @property
    def ed25519(self) -> bool: ...


def key_like(public_key: CertificatePublicKeyTypes, rules: KeyRules) -> GeneratedKey:
    """A new key pair of ``public_key``'s type when ``rules`` take that type, else of the
    type they list first (ECDSA, then RSA, then Ed25519). The RA checks the result like
    any other key; raises CertwrightError(POLICY) when the rules allow no type at all."""
    try:
        desc = keys.describe(public_key)
    except CertwrightError:
        desc = None  # a key we would not sign for: generate the profile's own type
    if desc is not None:
        if desc.algorithm is KeyAlgorithm.ECDSA and desc.curve in rules.ecdsa_curves:
            return ec.generate_private_key(keys.CURVES[str(desc.curve)]())
        if desc.algorithm is KeyAlgorithm.RSA and rules.rsa:
            return rsa.generate_private_key(_RSA_EXPONENT, max(desc.bits, rules.rsa_min_bits))
        if desc.algorithm is KeyAlgorithm.ED25519 and rules.ed25519:
            return ed25519.Ed25519PrivateKey.generate()
    if rules.ecdsa_curves:
        return ec.generate_private_key(keys.CURVES[rules.ecdsa_curves[0]]())
    if rules.rsa:
        return rsa.generate_private_key(_RSA_EXPONENT, rules.rsa_min_bits)
    if rules.ed25519:
        return ed25519.Ed25519PrivateKey.generate()
    raise CertwrightError(ErrorKind.POLICY, "this profile allows no key type the server "
                          "can generate", rule="keys")


def request_over(csr: x509.CertificateSigningRequest, key: GeneratedKey
                 ) -> x509.CertificateSigningRequest:
    """The client's request (subject and extension requests) over the generated key.

    RFC 7030 4.4.1: the CSR of a serverkeygen request names what the certificate should
    say; its own key only proves the request came whole from the client."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    try:
        extensions = list(csr.extensions)
    except ValueError:
        raise CertwrightError(ErrorKind.BAD_CSR, "CSR extensions cannot be parsed") from None
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(key, keys.signature_hash(key))
