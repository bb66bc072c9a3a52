"""Key descriptions, key generation for the CA, and the key-strength floor.

The floor here is what certwright will never accept whatever a profile says; profiles
narrow it further (``ca.profiles.KeyRules``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from certwright.errors import CertwrightError, ErrorKind


class KeyAlgorithm(enum.Enum):
    RSA = "rsa"
    ECDSA = "ecdsa"
    ED25519 = "ed25519"
    ED448 = "ed448"


CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_NAMES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

# RFC 8017 keys below 2048 bits are broken in practice (NIST SP 800-131A, CA/B BR 6.1.5).
RSA_FLOOR_BITS = 2048
RSA_CEILING_BITS = 8192


@dataclasses.dataclass(frozen=True)
class KeyDescription:
    algorithm: KeyAlgorithm
    bits: int
    curve: str | None = None  # "P-256"... for ECDSA

    def __str__(self) -> str:
        if self.algorithm is KeyAlgorithm.RSA:
            return f"RSA {self.bits}"
        if self.algorithm is KeyAlgorithm.ECDSA:
            return f"ECDSA {self.curve}"
        return str(self.algorithm.value).capitalize()


def describe(key: object) -> KeyDescription:
    """Describe a public key, refusing what certwright never signs for.

    Raises CertwrightError(BAD_PUBLIC_KEY) for unsupported algorithms and curves, RSA keys
    below the floor, and RSA exponents the CA/B Baseline Requirements 6.1.6 forbid.
    """
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        e = key.public_numbers().e
        if bits < RSA_FLOOR_BITS:
            raise CertwrightError(
                ErrorKind.BAD_PUBLIC_KEY,
                f"RSA key of {bits} bits is too weak: at least {RSA_FLOOR_BITS} bits required",
                rule="key.rsa_min_bits",
            )
        if bits > RSA_CEILING_BITS:
            raise CertwrightError(
                ErrorKind.BAD_PUBLIC_KEY,
                f"RSA key of {bits} bits is larger than the {RSA_CEILING_BITS} bits supported",
                rule="key.rsa_max_bits",
            )
        # BR 6.1.6: "The value of the public exponent MUST be an odd number equal to 3 or more."
        if e < 3 or e % 2 == 0:
            raise CertwrightError(
                ErrorKind.BAD_PUBLIC_KEY, f"RSA public exponent {e} is not allowed"
            )
        return KeyDescription(KeyAlgorithm.RSA, bits)
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_NAMES.get(key.curve.name)
        if curve is None:
            raise CertwrightError(
                ErrorKind.BAD_PUBLIC_KEY,
                f"elliptic curve {key.curve.name} is not supported: use P-256, P-384 or P-521",
                rule="key.ecdsa_curves",
            )
        return KeyDescription(KeyAlgorithm.ECDSA, key.curve.key_size, curve)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyDescription(KeyAlgorithm.ED25519, 256)
    if isinstance(key, ed448.Ed448PublicKey):
        return KeyDescription(KeyAlgorithm.ED448, 456)
    raise CertwrightError(
        ErrorKind.BAD_PUBLIC_KEY, f"unsupported public key type {type(key).__name__}"
    )


CA_KEY_TYPES = ("ec-p384", "ec-p256", "rsa-3072", "rsa-4096")


def generate_ca_key(kind: str) -> CertificateIssuerPrivateKeyTypes:
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind in ("rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    raise ValueError(f"unknown CA key type {kind!r}: choose one of {', '.join(CA_KEY_TYPES)}")


SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def signature_hash(key: CertificateIssuerPrivateKeyTypes | CertificatePublicKeyTypes) -> (
    SignatureHash | None
):
    """The hash to sign with for a CA key: matched to the key's strength (BR 7.1.3.2)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
        return hashes.SHA256()
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return hashes.SHA256()


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a secret atomically: 0600 from creation, O_EXCL, never through a symlink."""
    write_atomic(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a public file (certificate, CRL) atomically, mode 0644."""
    write_atomic(path, data, 0o644)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one.

    The content goes to a fresh name in the same directory, created with ``mode`` (never
    widened then narrowed), is fsynced, renamed over ``path``, and the directory fsynced.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertwrightError(ErrorKind.CONFIG, f"{path}: not a key a CA can sign with")
    return key
