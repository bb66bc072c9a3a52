"""Creating the CA hierarchy: a root CA and an issuing intermediate signed by it.

The issuing key is made by the key provider (``keys.KeyProvider.ensure``), which may be
a token the key never leaves; only its public key comes here. The root key is made here
and returned for ``init`` to write out: it signs only at creation, so it belongs offline,
not to the provider a running CA signs with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from certwright.pki.keys import generate_ca_key, signature_hash

ROOT_LIFETIME = dt.timedelta(days=3650)
ISSUING_LIFETIME = dt.timedelta(days=1825)


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    root_key: CertificateIssuerPrivateKeyTypes
    root: x509.Certificate
    issuing: x509.Certificate


def issuer_id(cert: x509.Certificate) -> str:
    """A short stable id for a CA certificate, used in URLs: 16 hex digits of its key hash."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()[:16]


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,  # the issuing CA signs OCSP responses itself
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False,
        decipher_only=False,
    )


def create(
    *, key_type: str, organization: str, now: dt.datetime, http_url: str,
    issuing_key: CertificateIssuerPublicKeyTypes,
) -> Hierarchy:
    tag = secrets.token_hex(3)
    root_key = generate_ca_key(key_type)
    root_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} Root CA {tag}"),
    ])
    start = now.replace(microsecond=0) - dt.timedelta(hours=1)
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .serial_number(secrets.randbits(128) | 1)
        .issuer_name(root_name)
        .subject_name(root_name)
        .public_key(root_key.public_key())
        .not_valid_before(start)
        .not_valid_after(start + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, signature_hash(root_key))
    )
    issuing_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} Issuing CA {tag}"),
    ])
    root_id = issuer_id(root)
    issuing = (
        x509.CertificateBuilder()
        .serial_number(secrets.randbits(128) | 1)
        .issuer_name(root_name)
        .subject_name(issuing_name)
        .public_key(issuing_key)
        .not_valid_before(start)
        .not_valid_after(start + ISSUING_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing_key),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                       critical=False)
        .add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(
                                       f"{http_url}/ca/{root_id}.der")),
        ]), critical=False)
        .sign(root_key, signature_hash(root_key))
    )
    return Hierarchy(root_key, root, issuing)
