"""Rows of the ``transactions`` table in, ``model.transactions.Transaction`` out.

A transaction is recorded once per (protocol, profile, requester, transaction id): the
unique key settles concurrent first attempts, which then all find the same held request.
"""

from __future__ import annotations

import sqlalchemy as sa

from certwright.model.transactions import Transaction
from certwright.store import schema
from certwright.store.repo import Store

__all__ = ["TransactionRows"]

_T = schema.transactions
_BY_KEY = sa.select(_T).where(
    _T.c.protocol == sa.bindparam("protocol"), _T.c.profile == sa.bindparam("profile"),
    _T.c.requester == sa.bindparam("requester"), _T.c.transaction_id == sa.bindparam("tid"))
_DELETE = _T.delete().where(_T.c.request_id == sa.bindparam("rid"))


def _transaction(r: sa.Row[tuple[object, ...]]) -> Transaction:
    m = r._mapping
    sealed = m["sealed_key"]
    return Transaction(m["protocol"], m["transaction_id"], m["request_id"], m["profile"],
                       m["requester"], m["operation"],
                       bytes(sealed) if sealed is not None else None, m["created_at"])


class TransactionRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    def find(self, protocol: str, profile: str, requester: str, transaction_id: str
             ) -> Transaction | None:
        with self.store.read() as conn:
            r = conn.execute(_BY_KEY, {"protocol": protocol, "profile": profile,
                                       "requester": requester, "tid": transaction_id}
                             ).first()
        return _transaction(r) if r else None

    def insert(self, t: Transaction) -> bool:
        """Record ``t``; False if one with the same key is recorded already."""
        try:
            with self.store.state_write(savepoint=True) as conn:
                conn.execute(_T.insert().values(
                    request_id=t.request_id, protocol=t.protocol,
                    transaction_id=t.transaction_id, profile=t.profile,
                    requester=t.requester, operation=t.operation, sealed_key=t.sealed_key,
                    created_at=t.created_at))
        except sa.exc.IntegrityError:
            return False
        return True

    def delete(self, request_id: str) -> None:
        with self.store.state_write() as conn:
            conn.execute(_DELETE, {"rid": request_id})
