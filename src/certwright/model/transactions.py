"""Enrollment transactions: a protocol's own name for a request the RA held for an
operator, so the client's retry or poll finds it and collects its outcome (EST's repeated
simpleenroll, RFC 7030 4.2.3; SCEP CertPoll, RFC 8894; CMP pollReq, RFC 9810).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

__all__ = ["Transaction"]


@dataclasses.dataclass(frozen=True)
class Transaction:
    protocol: str
    # Unique per (protocol, profile, requester): what the client's retry names (SCEP's
    # transactionID, CMP's transactionID) or what the protocol derives from the request.
    transaction_id: str
    request_id: str  # the held request (requests.id)
    profile: str
    requester: str
    operation: str  # the protocol's operation that made it (simpleenroll, ...)
    # A server-generated private key, sealed under the requester's shared secret
    # (ca.credentials.seal) until the requester collects it.
    sealed_key: bytes | None
    created_at: dt.datetime
