"""EST bootstrap passwords: generation, salted hashing, verification, and the key that
keeps a server-generated private key sealed while its request waits for an operator.

Passwords are generated here (192 bits from the CSPRNG), shown once, and stored only as
``scrypt$N$r$p$salt$hash``. Verification costs one scrypt (about 50 ms of CPU, which
also slows guessing); a correct password is then remembered in process memory as an
HMAC under a per-process key for a short while, so a client enrolling many times on
one credential pays scrypt once. Nothing that must survive a restart lives there: the
credential row is read on every request, and a changed or removed credential no longer
matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certwright.errors import CertwrightError, ErrorKind

__all__ = ["NAME_PATTERN", "VerifiedCache", "check_name", "hash_password", "new_password",
           "seal_key", "unseal_key", "verify_password"]

# The user-id of HTTP Basic may not contain ':' (RFC 7617 2); we also keep it printable.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

# scrypt at N=2^14, r=8, p=1: 16 MiB and tens of milliseconds per check (RFC 7914).
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise CertwrightError(ErrorKind.MALFORMED,
                              f"credential name {name!r}: use up to 64 letters, digits, "
                              "'.', '_', '@' and '-', starting with a letter or digit")
    return name


def new_password() -> str:
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM,
                          dklen=32)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


# What an unknown user's password is checked against, so that "no such user" costs the
# same scrypt as "wrong password" and the two cannot be told apart by timing.
_DUMMY = hash_password(secrets.token_urlsafe(24))


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored``; with ``stored`` None (an unknown user),
    the same work is done and the answer is False."""
    target = stored if stored is not None else _DUMMY
    try:
        scheme, n, r, p, salt, digest = target.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        ok = hmac.compare_digest(got, base64.b64decode(digest))
    except ValueError:
        _scrypt(password, base64.b64decode(_DUMMY.split("$")[4]), _N, _R, _P)
        ok = False
    return ok and stored is not None


class VerifiedCache:
    """Passwords verified recently, as HMACs under a key that never leaves this process.

    Keyed by the stored hash as well as the name, so a credential re-created under the
    same name does not match an old entry. Only successes are remembered.
    """

    def __init__(self, ttl: float = 300.0, size: int = 4096) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._size = size
        self._entries: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def check(self, name: str, stored: str | None, password: str) -> bool:
        """``verify_password``, skipping scrypt for a password this process verified less
        than ``ttl`` seconds ago."""
        if stored is not None:
            with self._lock:
                entry = self._entries.get((name, stored))
            if entry is not None and entry[1] > time.monotonic() and hmac.compare_digest(
                    entry[0], self._mac(password)):
                return True
        if not verify_password(password, stored):
            return False
        assert stored is not None
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[(name, stored)] = (self._mac(password), time.monotonic() + self._ttl)
        return True


# -- sealing a server-generated key while its request is held ---------------------------

_SEAL_INFO = b"certwright est serverkeygen hold v1 "


def _seal_key(password: str, salt: bytes, request_id: str) -> AESGCM:
    # The password has 192 bits of entropy (new_password), so HKDF needs no stretching.
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
               info=_SEAL_INFO + request_id.encode())
    return AESGCM(kdf.derive(password.encode()))


def seal_key(pkcs8_der: bytes, password: str, request_id: str) -> bytes:
    """Encrypt a generated private key under the requester's password: the store alone
    never holds a usable key, and only the client that asked can collect it."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    return salt + nonce + _seal_key(password, salt, request_id).encrypt(
        nonce, pkcs8_der, request_id.encode())


def unseal_key(sealed: bytes, password: str, request_id: str) -> bytes:
    salt, nonce, body = sealed[:16], sealed[16:28], sealed[28:]
    try:
        return _seal_key(password, salt, request_id).decrypt(nonce, body, request_id.encode())
    except InvalidTag:
        raise CertwrightError(ErrorKind.UNAUTHORIZED,
                              "the held key cannot be opened with this credential") from None
