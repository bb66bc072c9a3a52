"""Enrollment transactions: a protocol's transaction id -> the request the RA held for
an operator -> its outcome, for every protocol whose client comes back for it (a request
repeated after 202, RFC 7030 4.2.3; CertPoll, RFC 8894; pollReq, RFC 9810).

The front-end records a transaction when ``CertificateAuthority.enroll`` answers Held,
finds it when the client comes back, asks ``CertificateAuthority.outcome`` what became
of the request, and marks it collected once the client has that outcome: the row goes,
and the same transaction id then starts a new request.
"""

from __future__ import annotations

from certwright.clock import Clock
from certwright.model.transactions import Transaction
from certwright.store.repo import Store
from certwright.store.transactions import TransactionRows

__all__ = ["Transaction", "Transactions"]


class Transactions:
    """The held-request transactions of one protocol."""

    def __init__(self, store: Store, clock: Clock, protocol: str) -> None:
        self.protocol = protocol
        self._rows = TransactionRows(store)
        self._clock = clock

    def find(self, profile: str, requester: str, transaction_id: str) -> Transaction | None:
        """The requester's open transaction of this id under ``profile``, if any."""
        return self._rows.find(self.protocol, profile, requester, transaction_id)

    def record(self, request_id: str, *, profile: str, requester: str, transaction_id: str,
               operation: str, sealed_key: bytes | None = None) -> bool:
        """Remember held request ``request_id`` for the client's retry; False if this
        transaction is recorded already (a concurrent first attempt won)."""
        return self._rows.insert(Transaction(
            self.protocol, transaction_id, request_id, profile, requester, operation,
            sealed_key, self._clock.now()))

    def collected(self, request_id: str) -> None:
        """The client has the outcome: a new request with the same id starts afresh."""
        self._rows.delete(request_id)
