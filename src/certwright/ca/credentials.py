"""Named shared secrets: each bound to one profile and to the one protocol that accepts
it (bootstrap passwords, RFC 7030 3.2.3; challenge passwords, RFC 8894; MAC secrets,
RFC 9810). The protocol is a name its front-end gives ("est", ...); nothing here
depends on which it is.

A secret is generated here (192 bits from the CSPRNG), shown once, and stored only as
``scrypt$N$r$p$salt$hash``. Verification costs one scrypt (about 50 ms of CPU, which
also slows guessing); a correct secret is then remembered in process memory as an HMAC
under a per-process key for a short while (``VerifiedCache``), so a client enrolling many
times on one credential pays scrypt once. Nothing that must survive a restart lives
there: the credential row is read on every request, and a changed or removed credential
no longer matches.

Every creation, removal and failed check is an audit event named after the protocol
(``<protocol>.credential.created``, ``.removed``, ``<protocol>.auth.failed``). A use is
audited by the record of what it was used for: the certificate issued or the request
held names the requester ``<protocol>-credential:<name>``, so a good check costs no
write of its own.
"""

from __future__ import annotations

import base64
import datetime as dt
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

from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind, not_found
from certwright.model.credentials import Credential
from certwright.store.credentials import CredentialRows
from certwright.store.repo import Store

__all__ = ["NAME_PATTERN", "Credential", "CredentialRefused", "Credentials", "VerifiedCache",
           "check_name", "hash_secret", "new_secret", "seal", "unseal", "verify_secret"]

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


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


# What an unknown name's secret is checked against, so that "no such name" costs the
# same scrypt as "wrong secret" and the two cannot be told apart by timing.
_DUMMY = hash_secret(secrets.token_urlsafe(24))


def verify_secret(secret: str, stored: str | None) -> bool:
    """True if ``secret`` matches ``stored``; with ``stored`` None (an unknown name), the
    same work is done and the answer is False. The digests are compared in constant
    time."""
    target = stored if stored is not None else _DUMMY
    try:
        scheme, n, r, p, salt, digest = target.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        got = _scrypt(secret, base64.b64decode(salt), int(n), int(r), int(p))
        ok = hmac.compare_digest(got, base64.b64decode(digest))
    except ValueError:
        _scrypt(secret, base64.b64decode(_DUMMY.split("$")[4]), _N, _R, _P)
        ok = False
    return ok and stored is not None


class VerifiedCache:
    """Secrets verified recently, as HMACs under a key that never leaves this process.

    Keyed by the stored hash as well as the name, so a credential re-created under the
    same name does not match an old entry. Only successes are remembered.
    """

    def __init__(self, ttl: float = 300.0, size: int = 4096) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._size = size
        self._entries: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _mac(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).digest()

    def check(self, name: str, stored: str | None, secret: str) -> bool:
        """``verify_secret``, skipping scrypt for a secret this process verified less
        than ``ttl`` seconds ago."""
        if stored is not None:
            with self._lock:
                entry = self._entries.get((name, stored))
            if entry is not None and entry[1] > time.monotonic() and hmac.compare_digest(
                    entry[0], self._mac(secret)):
                return True
        if not verify_secret(secret, stored):
            return False
        assert stored is not None
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[(name, stored)] = (self._mac(secret), time.monotonic() + self._ttl)
        return True


# -- sealing a server-generated key under the requester's secret --------------------------


def _sealing_key(secret: str, salt: bytes, info: bytes) -> AESGCM:
    # The secret has 192 bits of entropy (new_secret), so HKDF needs no stretching.
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info)
    return AESGCM(kdf.derive(secret.encode()))


def seal(plaintext: bytes, secret: str, *, context: bytes, bound_to: str) -> bytes:
    """Encrypt (a generated private key) under a requester's secret: the store alone never
    holds a usable key, and only the requester that asked can open it. ``context`` names
    the protocol's use (domain separation); ``bound_to`` (the request id) is bound in
    as the key derivation's info and as associated data."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    aead = _sealing_key(secret, salt, context + bound_to.encode())
    return salt + nonce + aead.encrypt(nonce, plaintext, bound_to.encode())


def unseal(sealed: bytes, secret: str, *, context: bytes, bound_to: str) -> bytes:
    salt, nonce, body = sealed[:16], sealed[16:28], sealed[28:]
    try:
        return _sealing_key(secret, salt, context + bound_to.encode()).decrypt(
            nonce, body, bound_to.encode())
    except InvalidTag:
        raise CertwrightError(ErrorKind.UNAUTHORIZED,
                              "the held key cannot be opened with this credential") from None


# -- the credentials of one protocol ------------------------------------------------------


class CredentialRefused(CertwrightError):
    """An unknown name or a wrong secret: one answer for both (and the same work), which
    each protocol renders as its "authenticate again" (HTTP: 401)."""

    def __init__(self, noun: str) -> None:
        super().__init__(ErrorKind.UNAUTHORIZED, f"wrong {noun} name or secret")


class Credentials:
    """The named shared secrets one protocol accepts."""

    def __init__(self, store: Store, clock: Clock, protocol: str) -> None:
        self.protocol = protocol
        self.noun = f"{protocol.upper()} credential"  # how messages name one
        self._store = store
        self._rows = CredentialRows(store)
        self._clock = clock
        self._verified = VerifiedCache()

    def create(self, name: str, profile: str, *, actor: str, one_time: bool = False,
               expires_at: dt.datetime | None = None) -> tuple[Credential, str]:
        """Create a credential; return it and its secret (which is not stored: show it
        once). The row and its audit event commit together."""
        check_name(name)
        secret = new_secret()
        now = self._clock.now()
        credential = Credential(self.protocol, name, profile, hash_secret(secret), one_time,
                                expires_at, None, now)
        try:
            with self._store.write() as conn:
                self._rows.insert(conn, credential)
                self._store.append_audit(
                    conn, f"{self.protocol}.credential.created", actor=actor, subject=name,
                    at=now, data={"profile": profile, "one_time": one_time,
                                  "expires_at": expires_at.isoformat() if expires_at else None})
        except CertwrightError as e:
            if e.kind is ErrorKind.CONFLICT:
                raise CertwrightError(ErrorKind.CONFLICT,
                                      f"an {self.noun} named {name!r} exists already") from None
            raise
        return credential, secret

    def get(self, name: str) -> Credential | None:
        return self._rows.get(self.protocol, name)

    def all(self) -> list[Credential]:
        return self._rows.of_protocol(self.protocol)

    def remove(self, name: str, *, actor: str) -> Credential:
        """Remove a credential: it authenticates nothing from now on."""
        with self._store.write() as conn:
            removed = self._rows.delete(conn, self.protocol, name)
            if removed is None:
                raise not_found(f"no {self.noun} named {name!r}")
            self._store.append_audit(conn, f"{self.protocol}.credential.removed", actor=actor,
                                     subject=name, at=self._clock.now(),
                                     data={"profile": removed.profile})
        return removed

    def verify(self, name: str, secret: str, *, profile: str | None, client: str
               ) -> Credential:
        """The credential ``name`` if ``secret`` is its secret and it is bound to
        ``profile`` (None: whichever it is bound to). Raises CredentialRefused for an
        unknown name or a wrong secret, CertwrightError(UNAUTHORIZED) for a credential of
        another profile; audits both. A spent or expired credential verifies: what it
        may still do (collect an earlier request's outcome) is the caller's to decide.

        Call it outside any unit of work: a first check costs a scrypt, and no lock should
        be held meanwhile."""
        found = self.get(name) if name else None
        if not self._verified.check(name, found.secret if found else None, secret):
            self.audit_refusal("unknown credential" if found is None else "wrong password",
                               name, profile=profile, client=client)
            raise CredentialRefused(self.noun)
        assert found is not None
        wanted = profile or found.profile
        if found.profile != wanted:
            self.audit_refusal("credential of another profile", name, profile=wanted,
                               client=client)
            raise CertwrightError(ErrorKind.UNAUTHORIZED,
                                  f"{self.noun} {name!r} is not for profile {wanted!r}")
        return found

    def audit_refusal(self, reason: str, subject: str, *, profile: str | None,
                      client: str) -> None:
        """Record a failed authentication (the protocol's own refusals go here too)."""
        self._store.audit(f"{self.protocol}.auth.failed", actor=f"{self.protocol}-client:{client}",
                          subject=subject, at=self._clock.now(),
                          data={"reason": reason, "profile": profile, "client": client})

    def spend(self, name: str) -> dt.datetime | None:
        """Mark a one-time credential used; the time it was spent at, or None if another
        request spent it first (a conditional UPDATE only one request can win)."""
        at = self._clock.now()
        return at if self._rows.spend(self.protocol, name, at) else None

    def unspend(self, name: str, at: dt.datetime) -> None:
        """Give back a one-time credential spent at ``at`` by a request that got no
        certificate and left nothing held (it was refused)."""
        self._rows.unspend(self.protocol, name, at)
