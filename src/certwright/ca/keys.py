"""Key providers: where the CA's private keys live, and the only code that uses them.

Everything that signs or decrypts for the CA asks a ``KeyProvider`` for a key by its
role and gets back an object that performs the operation (a ``Signer``, a
``Decrypter``); no caller ever holds key material. The provider is chosen by the
``keys`` section of certwright.yaml:

    keys:
      provider: software    # 0600 PEM files in DIR/ca/

A PKCS#11 provider (keys generated in and never leaving a token, SoftHSM2 in tests) is
one more module implementing ``KeyProvider`` and one more value for ``provider``;
nothing that signs changes. Its ``sign_certificate`` would take the TBSCertificate from
the builder (signed by a throwaway key of the same algorithm, as ``lint.Linter`` does),
have the token sign those bytes, and put the two together: the Authority checks that the
TBS signed is the one it linted. Providers fail closed: a key that is missing, unreadable
or does not match its certificate stops the CA from opening instead of being replaced.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509 import ocsp
from pydantic import BaseModel, ConfigDict

from certwright.errors import config_error
from certwright.pki.keys import (
    CA_KEY_TYPES,
    fsync_dir,
    generate_ca_key,
    load_private_key,
    private_key_pem,
    signature_hash,
)

__all__ = [
    "Decrypter",
    "KeyProvider",
    "KeyProviderSettings",
    "KeyRole",
    "Signer",
    "SoftwareKeyProvider",
    "SoftwareSigner",
    "open_provider",
]


class KeyRole(enum.Enum):
    """What a key is for. A provider maps each role to one key (several roles may share
    one); callers name the role, never the key."""

    # Signs certificates and CRLs (RFC 5280 4.1.1.3 and 5.1.1.3).
    ISSUING = "issuing"
    # Signs OCSP responses. Today the issuing CA signs them itself (RFC 6960 4.2.2.2,
    # the first of its three choices), so the software provider resolves this role to
    # the issuing key; a delegated responder key would be a key of its own here.
    OCSP = "ocsp"
    # Decrypts SCEP's pkcsPKIEnvelope (RFC 8894 3.2.2), CMS EnvelopedData whose
    # content-encryption key is wrapped to the CA/RA's RSA key (RFC 5652 6.2.1).
    REQUEST_DECRYPTION = "request-decryption"
    # Signs CMP responses' protection (RFC 4210 5.1.3.3, RFC 9483 3.2).
    MESSAGE_PROTECTION = "message-protection"


# Roles whose key decrypts rather than signs.
DECRYPTING_ROLES = frozenset({KeyRole.REQUEST_DECRYPTION})


class Signer(Protocol):
    """Signs with one key on behalf of the certificate that key belongs to."""

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate whose key this signer holds (for the issuing role, the CA)."""
        ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...

    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse: ...

    def sign(self, data: bytes) -> bytes:
        """A raw signature over ``data`` with the key's own algorithm and hash (the one
        ``pki.keys.signature_hash`` picks; RSA with PKCS#1 v1.5): for CMS SignedData
        (SCEP) and CMP message protection."""
        ...


class Decrypter(Protocol):
    """Decrypts with one RSA key: CMS key transport (RFC 5652 6.2.1), as SCEP uses."""

    def public_key(self) -> rsa.RSAPublicKey: ...

    def decrypt(self, ciphertext: bytes) -> bytes:
        """RSAES-PKCS1-v1_5 (RFC 8017 7.2), the rsaEncryption key transport SCEP
        clients use. With OpenSSL 3.2 or later a bad padding yields random bytes rather
        than an error (implicit rejection, against Bleichenbacher's oracle), so what
        refuses a forged envelope is the caller's check of the decrypted content."""
        ...


class KeyProvider(Protocol):
    """Supplies keys by role. Implementations: ``SoftwareKeyProvider`` (here)."""

    @property
    def name(self) -> str: ...

    def signer(self, role: KeyRole, certificate: x509.Certificate) -> Signer:
        """The signer for ``role``, bound to ``certificate``; raises CertwrightError
        (CONFIG) when the key is missing or is not ``certificate``'s key."""
        ...

    def decrypter(self, role: KeyRole) -> Decrypter:
        """The decrypter for ``role``; raises CertwrightError (CONFIG) when the key is
        missing or cannot decrypt (not RSA)."""
        ...

    def ensure(self, role: KeyRole, key_type: str) -> CertificateIssuerPublicKeyTypes:
        """The public key for ``role``, generating the key pair (of ``key_type``, one of
        ``pki.keys.CA_KEY_TYPES``) inside the provider if it has none yet. An existing
        key of another type is refused, never replaced."""
        ...


class KeyProviderSettings(BaseModel):
    """The ``keys`` section of certwright.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Only "software" today; "pkcs11" comes with its own sub-section (module, token, PIN).
    provider: Literal["software"] = "software"


# -- the software provider -----------------------------------------------------------------


def _key_type_of(key: CertificateIssuerPublicKeyTypes) -> str | None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp384r1": "ec-p384", "secp256r1": "ec-p256"}.get(key.curve.name)
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    return None


class SoftwareSigner:
    """A key held in process memory, loaded from a 0600 file in the data directory."""

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

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
            return key.sign(data)
        assert self._hash is not None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(self._hash))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), self._hash)
        raise TypeError(f"cannot sign with a {type(key).__name__}")

    def __repr__(self) -> str:  # never show key material
        return f"SoftwareSigner({self._cert.subject.rfc4514_string()})"


class _SoftwareDecrypter:
    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def decrypt(self, ciphertext: bytes) -> bytes:
        return self._key.decrypt(ciphertext, padding.PKCS1v15())

    def __repr__(self) -> str:
        return "SoftwareDecrypter()"


class SoftwareKeyProvider:
    """Keys in PEM files, mode 0600, in the data directory's ``ca/`` (created by init)."""

    # Which file holds each role's key. OCSP shares the issuing key (see KeyRole.OCSP).
    FILES: ClassVar[Mapping[KeyRole, str]] = types.MappingProxyType({
        KeyRole.ISSUING: "issuing.key",
        KeyRole.OCSP: "issuing.key",
        KeyRole.REQUEST_DECRYPTION: "request-decryption.key",
        KeyRole.MESSAGE_PROTECTION: "message-protection.key",
    })

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = key_dir
        self._loaded: dict[str, CertificateIssuerPrivateKeyTypes] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "software"

    def path(self, role: KeyRole) -> Path:
        return self.key_dir / self.FILES[role]

    def _key(self, role: KeyRole) -> CertificateIssuerPrivateKeyTypes:
        path = self.path(role)
        with self._lock:
            key = self._loaded.get(path.name)
            if key is None:
                try:
                    key = load_private_key(path)
                except (OSError, ValueError) as e:
                    raise config_error(f"{path}: cannot load the {role.value} key: {e}"
                                       ) from None
                self._loaded[path.name] = key
            return key

    def signer(self, role: KeyRole, certificate: x509.Certificate) -> Signer:
        try:
            return SoftwareSigner(self._key(role), certificate)
        except ValueError:
            raise config_error(
                f"{self.path(role)}: the {role.value} key does not match the certificate "
                f"{certificate.subject.rfc4514_string()}") from None

    def decrypter(self, role: KeyRole) -> Decrypter:
        key = self._key(role)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise config_error(f"{self.path(role)}: the {role.value} key is not an RSA key; "
                               "only RSA keys decrypt (RSA key transport)")
        return _SoftwareDecrypter(key)

    def ensure(self, role: KeyRole, key_type: str) -> CertificateIssuerPublicKeyTypes:
        if key_type not in CA_KEY_TYPES:
            raise config_error(f"unknown key type {key_type!r}; choose one of "
                               f"{', '.join(CA_KEY_TYPES)}")
        if role in DECRYPTING_ROLES and not key_type.startswith("rsa-"):
            raise config_error(f"the {role.value} key decrypts (RSA key transport), so "
                               f"it must be RSA, not {key_type}")
        path = self.path(role)
        if not path.exists():
            self._create(path, key_type)
        public = self._key(role).public_key()
        if _key_type_of(public) != key_type:
            raise config_error(f"{path}: the {role.value} key exists and is not {key_type}; "
                               "it is kept (remove it yourself to make a new one)")
        return public

    def _create(self, path: Path, key_type: str) -> None:
        """Write a new key so that two processes racing here end with one key: the PEM
        goes to a private temporary name and is hard-linked to ``path``, which fails
        when the other process linked first (its key is then the one both use)."""
        key = generate_ca_key(key_type)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(
            os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(private_key_pem(key))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def __repr__(self) -> str:
        return f"SoftwareKeyProvider({self.key_dir})"


# -- choosing a provider -----------------------------------------------------------------

_FACTORIES: dict[str, Callable[[KeyProviderSettings, Path], KeyProvider]] = {
    "software": lambda _settings, key_dir: SoftwareKeyProvider(key_dir),
}


def open_provider(settings: KeyProviderSettings, key_dir: Path) -> KeyProvider:
    """The provider ``settings`` names; ``key_dir`` is where file-based keys live."""
    return _FACTORIES[settings.provider](settings, key_dir)

