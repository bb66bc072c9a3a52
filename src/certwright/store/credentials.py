"""Rows of the ``credentials`` table in, ``model.credentials.Credential`` out.

Races between requests (and replicas) are settled by the database: a one-time credential
is spent by a conditional UPDATE that only one request can win, and a name is taken by
the primary key (protocol, name).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certwright.errors import CertwrightError, ErrorKind
from certwright.model.credentials import Credential
from certwright.store import schema
from certwright.store.repo import Store

__all__ = ["CredentialRows"]

_T = schema.credentials
_KEY = (_T.c.protocol == sa.bindparam("proto")) & (_T.c.name == sa.bindparam("cname"))
_BY_NAME = sa.select(_T).where(_KEY)
_BY_PROTOCOL = (sa.select(_T).where(_T.c.protocol == sa.bindparam("proto"))
                .order_by(_T.c.name))
_DELETE = _T.delete().where(_KEY)
_SPEND = _T.update().where(_KEY, _T.c.used_at.is_(None)).values(
    used_at=sa.bindparam("at", type_=_T.c.used_at.type))
_UNSPEND = _T.update().where(
    _KEY, _T.c.used_at == sa.bindparam("at", type_=_T.c.used_at.type)).values(used_at=None)


def _credential(r: sa.Row[tuple[object, ...]]) -> Credential:
    m = r._mapping
    return Credential(m["protocol"], m["name"], m["profile"], m["secret"], bool(m["one_time"]),
                      m["expires_at"], m["used_at"], m["created_at"])


class CredentialRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    def insert(self, conn: Connection, credential: Credential) -> None:
        """Add ``credential`` in the caller's transaction; CONFLICT if the name is taken.
        The caller's transaction is spoilt by the failed statement and must end."""
        try:
            with conn.begin_nested():
                conn.execute(_T.insert().values(
                    protocol=credential.protocol, name=credential.name,
                    profile=credential.profile, secret=credential.secret,
                    one_time=credential.one_time, expires_at=credential.expires_at,
                    used_at=credential.used_at, created_at=credential.created_at))
        except sa.exc.IntegrityError:
            raise CertwrightError(ErrorKind.CONFLICT, f"{credential.name!r} exists already"
                                  ) from None

    def get(self, protocol: str, name: str, conn: Connection | None = None
            ) -> Credential | None:
        if conn is not None:
            r = conn.execute(_BY_NAME, {"proto": protocol, "cname": name}).first()
        else:
            with self.store.read() as c:
                r = c.execute(_BY_NAME, {"proto": protocol, "cname": name}).first()
        return _credential(r) if r else None

    def of_protocol(self, protocol: str) -> list[Credential]:
        with self.store.read() as conn:
            return [_credential(r) for r in conn.execute(_BY_PROTOCOL, {"proto": protocol})]

    def delete(self, conn: Connection, protocol: str, name: str) -> Credential | None:
        """Remove in the caller's transaction; what was removed, or None."""
        found = self.get(protocol, name, conn)
        if found is not None:
            conn.execute(_DELETE, {"proto": protocol, "cname": name})
        return found

    def spend(self, protocol: str, name: str, at: dt.datetime) -> bool:
        """Mark a one-time credential used at ``at``; False if another request won."""
        with self.store.state_write() as conn:
            return conn.execute(_SPEND, {"proto": protocol, "cname": name, "at": at}
                                ).rowcount == 1

    def unspend(self, protocol: str, name: str, at: dt.datetime) -> None:
        with self.store.state_write() as conn:
            conn.execute(_UNSPEND, {"proto": protocol, "cname": name, "at": at})
