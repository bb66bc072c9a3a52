"""What the EST front-end asks of the core: the few calls it makes, declared here as
``typing.Protocol``s (the way step-ca's SCEP package declares the two authority methods
it uses). ``certwright.ca.service.CertificateAuthority`` satisfies them; EST never
reaches past them into the store or the Authority.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Protocol

from cryptography import x509

from certwright.ca.policy import EnrollmentRequest
from certwright.ca.profiles import Config
from certwright.ca.service import Held, Issued
from certwright.clock import Clock
from certwright.model.certificates import CertificateRecord
from certwright.model.credentials import Credential
from certwright.model.transactions import Transaction

__all__ = ["Core", "CredentialPort", "TransactionPort"]

# The protocol name EST's credentials and transactions are kept under in the core.
from certwright.est.config import PROTOCOL as PROTOCOL


class CredentialPort(Protocol):
    """EST bootstrap passwords (``ca.credentials.Credentials``)."""

    def verify(self, name: str, secret: str, *, profile: str | None, client: str
               ) -> Credential: ...

    def audit_refusal(self, reason: str, subject: str, *, profile: str | None,
                      client: str) -> None: ...

    def spend(self, name: str) -> dt.datetime | None: ...

    def unspend(self, name: str, at: dt.datetime) -> None: ...


class TransactionPort(Protocol):
    """Requests held for an operator that a client's retry collects
    (``ca.transactions.Transactions``)."""

    def find(self, profile: str, requester: str, transaction_id: str
             ) -> Transaction | None: ...

    def record(self, request_id: str, *, profile: str, requester: str, transaction_id: str,
               operation: str, sealed_key: bytes | None = None) -> bool: ...

    def collected(self, request_id: str) -> None: ...


class Core(Protocol):
    """The core as the EST front-end sees it."""

    @property
    def config(self) -> Config: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def chain(self) -> tuple[x509.Certificate, ...]: ...
    @property
    def root(self) -> x509.Certificate: ...

    def enroll(self, request: EnrollmentRequest) -> Issued | Held: ...

    def outcome(self, request_id: str) -> Issued | Held: ...

    def issued_here(self, cert: x509.Certificate) -> CertificateRecord | None: ...

    def unit(self) -> contextlib.AbstractContextManager[None]: ...

    def credentials(self, protocol: str) -> CredentialPort: ...

    def transactions(self, protocol: str) -> TransactionPort: ...
