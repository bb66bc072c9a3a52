"""Test helpers: keys and CSRs built the way clients build them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from certwright.ca.policy import EnrollmentRequest, Requester


def key(kind: str = "p256") -> Any:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    raise ValueError(kind)


def san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        if n.startswith("uri:"):
            out.append(x509.UniformResourceIdentifier(n[4:]))
        elif n.startswith("email:"):
            out.append(x509.RFC822Name(n[6:]))
        else:
            try:
                out.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                out.append(x509.DNSName(n))
    return out


def csr(names: Sequence[str] = ("web.svc.internal",), *, cn: str | None = None,
        private_key: Any = None) -> x509.CertificateSigningRequest:
    k = private_key if private_key is not None else key()
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(san(names)), critical=False)
    algo = None if isinstance(k, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(k, algo)


def csr_pem(*args: Any, **kwargs: Any) -> bytes:
    return csr(*args, **kwargs).public_bytes(serialization.Encoding.PEM)


def request(c: x509.CertificateSigningRequest, profile: str = "tls-server",
            protocol: str = "cli", **kwargs: Any) -> EnrollmentRequest:
    return EnrollmentRequest(profile=profile, csr=c, requester=Requester("test", "pytest"),
                             protocol=protocol, **kwargs)
