"""Check-in tokens: one bearer token per host, printed once, stored only as a hash.

A token names its host (``cwm_<base64url host>.<secret>``) so that a token presented
for another host's report is told apart from an unknown one (RFC 6750 3.1: 403 for a
valid token that does not cover the request, 401 for an invalid one) at the cost of one
hash, whichever host it names. Tokens made before they carried the host
(``cwm_<secret>``) still work, for the host in the report.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets

from certwright.errors import CertwrightError, ErrorKind
from certwright.monitor.storage import MonitorStorage

__all__ = ["InvalidToken", "Tokens", "hash_token", "new_token"]

TOKEN_PREFIX = "cwm_"  # noqa: S105 (a prefix, not a secret)


class InvalidToken(CertwrightError):
    """No token, or one no host holds: the requester is not authenticated at all (the
    check-in API answers 401 with a Bearer challenge, not the 403 of a refusal)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorKind.UNAUTHORIZED, detail)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_token(host: str) -> str:
    return f"{TOKEN_PREFIX}{_b64(host.encode())}.{secrets.token_urlsafe(32)}"


def token_host(token: str) -> str | None:
    """The host a token names, or None for a token of the older form (or garbage)."""
    head, dot, _ = token.removeprefix(TOKEN_PREFIX).partition(".")
    if not dot or not token.startswith(TOKEN_PREFIX):
        return None
    try:
        return _unb64(head).decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def hash_token(token: str, salt: bytes | None = None) -> str:
    """``hmac-sha256$SALT$HASH``. The token is 256 random bits, so one keyed hash is as
    strong as a slow KDF would be (there is no small space of guesses to slow down)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hmac.new(salt, token.encode(), hashlib.sha256).digest()
    return f"hmac-sha256${_b64(salt)}${_b64(digest)}"


def _matches(token: str, stored: str) -> bool:
    try:
        algo, salt, _ = stored.split("$")
        raw_salt = _unb64(salt)
    except ValueError:
        return False
    return algo == "hmac-sha256" and hmac.compare_digest(hash_token(token, raw_salt), stored)


# For an unknown host the same work is done against this, so the answer takes as long.
_DUMMY = hash_token("x" * 47)


class Tokens:
    def __init__(self, storage: MonitorStorage) -> None:
        self.storage = storage

    def add(self, host: str, *, actor: str, replace: bool = False) -> str:
        """A new bearer token for ``host``; only its hash is kept. Printed once."""
        token = new_token(host)
        self.storage.add_token(host, hash_token(token), actor=actor, replace=replace)
        return token

    def remove(self, host: str, *, actor: str) -> None:
        self.storage.remove_token(host, actor=actor)

    def hosts(self) -> list[tuple[str, dt.datetime]]:
        return self.storage.token_hosts()

    def authenticate(self, host: str, token: str) -> None:
        """Raise InvalidToken unless ``token`` is some host's, and CertwrightError
        (UNAUTHORIZED) when that host is not ``host``."""
        holder = token_host(token) or host
        stored = self.storage.token_secret(holder)
        ok = _matches(token, stored if stored is not None else _DUMMY)
        if stored is None or not ok:
            raise InvalidToken("the token is not valid for this host")
        if holder != host:
            raise CertwrightError(ErrorKind.UNAUTHORIZED,
                                  f"the token is not {host}'s: a token is good for its own "
                                  "host only")
