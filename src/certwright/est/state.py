"""EST protocol state in the store: bootstrap credentials, and requests held for an
operator that a client's retry must find. Rows are mapped to frozen dataclasses here and
nowhere else.

Races between requests (and replicas) are settled by the database: a one-time credential
is spent by a conditional UPDATE only one request can win; a held request is recorded
once per (profile, requester, public key, operation) by a unique key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind, not_found
from certwright.est import credentials
from certwright.store import schema
from certwright.store.repo import Store

__all__ = ["Credential", "EstState", "HeldRequest"]

CREDENTIALS = schema.est_credentials
HELD = schema.est_requests

_CREDENTIAL_BY_NAME = sa.select(CREDENTIALS).where(CREDENTIALS.c.name == sa.bindparam("name"))
_HELD_BY_KEY = sa.select(HELD).where(
    HELD.c.profile == sa.bindparam("profile"), HELD.c.requester == sa.bindparam("requester"),
    HELD.c.spki_sha256 == sa.bindparam("spki"), HELD.c.operation == sa.bindparam("operation"))
_SPEND = CREDENTIALS.update().where(
    CREDENTIALS.c.name == sa.bindparam("cname"), CREDENTIALS.c.used_at.is_(None)
).values(used_at=sa.bindparam("at", type_=CREDENTIALS.c.used_at.type))
_UNSPEND = CREDENTIALS.update().where(
    CREDENTIALS.c.name == sa.bindparam("cname"),
    CREDENTIALS.c.used_at == sa.bindparam("at", type_=CREDENTIALS.c.used_at.type),
).values(used_at=None)


@dataclasses.dataclass(frozen=True)
class Credential:
    name: str
    profile: str
    secret: str  # scrypt$N$r$p$salt$hash
    one_time: bool
    expires_at: dt.datetime | None
    used_at: dt.datetime | None
    created_at: dt.datetime

    def spent(self) -> bool:
        return self.one_time and self.used_at is not None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclasses.dataclass(frozen=True)
class HeldRequest:
    request_id: str
    profile: str
    requester: str
    spki_sha256: str
    operation: str  # simpleenroll | simplereenroll | serverkeygen
    wrapped_key: bytes | None
    created_at: dt.datetime


def _credential(r: sa.Row[tuple[object, ...]]) -> Credential:
    m = r._mapping
    return Credential(m["name"], m["profile"], m["secret"], bool(m["one_time"]),
                      m["expires_at"], m["used_at"], m["created_at"])


def _held(r: sa.Row[tuple[object, ...]]) -> HeldRequest:
    m = r._mapping
    wrapped = m["wrapped_key"]
    return HeldRequest(m["request_id"], m["profile"], m["requester"], m["spki_sha256"],
                       m["operation"], bytes(wrapped) if wrapped is not None else None,
                       m["created_at"])


class EstState:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- credentials ----------------------------------------------------------------------

    def add_credential(self, name: str, profile: str, *, one_time: bool = False,
                       expires_at: dt.datetime | None = None) -> tuple[Credential, str]:
        """Create a credential; return it and its password (which is not stored)."""
        credentials.check_name(name)
        password = credentials.new_password()
        now = self.clock.now()
        try:
            with self.store.state_write(savepoint=True) as conn:
                conn.execute(CREDENTIALS.insert().values(
                    name=name, profile=profile, secret=credentials.hash_password(password),
                    one_time=one_time, expires_at=expires_at, used_at=None, created_at=now))
        except sa.exc.IntegrityError:
            raise CertwrightError(ErrorKind.CONFLICT,
                                  f"an EST credential named {name!r} exists already") from None
        found = self.credential(name)
        assert found is not None
        return found, password

    def credential(self, name: str) -> Credential | None:
        with self.store.read() as conn:
            r = conn.execute(_CREDENTIAL_BY_NAME, {"name": name}).first()
        return _credential(r) if r else None

    def credentials(self) -> list[Credential]:
        with self.store.read() as conn:
            return [_credential(r) for r in conn.execute(
                sa.select(CREDENTIALS).order_by(CREDENTIALS.c.name))]

    def remove_credential(self, name: str) -> Credential:
        with self.store.state_write() as conn:
            r = conn.execute(_CREDENTIAL_BY_NAME, {"name": name}).first()
            if r is None:
                raise not_found(f"no EST credential named {name!r}")
            conn.execute(CREDENTIALS.delete().where(CREDENTIALS.c.name == name))
        return _credential(r)

    def spend(self, name: str) -> dt.datetime | None:
        """Mark a one-time credential used; the time it was spent at, or None if another
        request spent it first."""
        at = self.clock.now()
        with self.store.state_write() as conn:
            won = conn.execute(_SPEND, {"cname": name, "at": at}).rowcount == 1
        return at if won else None

    def unspend(self, name: str, at: dt.datetime) -> None:
        """Give back a one-time credential spent at ``at`` by a request that got no
        certificate and left no held request (it was refused)."""
        with self.store.state_write() as conn:
            conn.execute(_UNSPEND, {"cname": name, "at": at})

    # -- requests held for an operator -----------------------------------------------------

    def held(self, profile: str, requester: str, spki_sha256: str,
             operation: str) -> HeldRequest | None:
        with self.store.read() as conn:
            r = conn.execute(_HELD_BY_KEY, {"profile": profile, "requester": requester,
                                            "spki": spki_sha256, "operation": operation}
                             ).first()
        return _held(r) if r else None

    def hold(self, request_id: str, *, profile: str, requester: str, spki_sha256: str,
             operation: str, wrapped_key: bytes | None = None) -> bool:
        """Remember a held request for the retry; False if one with the same key is
        already remembered (a concurrent first attempt)."""
        try:
            with self.store.state_write(savepoint=True) as conn:
                conn.execute(HELD.insert().values(
                    request_id=request_id, profile=profile, requester=requester,
                    spki_sha256=spki_sha256, operation=operation, wrapped_key=wrapped_key,
                    created_at=self.clock.now()))
        except sa.exc.IntegrityError:
            return False
        return True

    def collected(self, request_id: str) -> None:
        """The client has the outcome: a new request with the same key starts afresh."""
        with self.store.state_write() as conn:
            conn.execute(HELD.delete().where(HELD.c.request_id == request_id))
