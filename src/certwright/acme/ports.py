"""What the ACME front-end needs of the rest of certwright, and nothing more.

step-ca's ACME package declares the few authority methods it calls as an interface of its
own (``acme/common.go``); these two Protocols are ours. ``AcmeCore`` is the part of
``CertificateAuthority`` ACME calls; ``AcmeStorage`` is ACME's own storage, which the
storage layer registers as "acme" (``certwright.store.acme``) and the core hands out by
that name. No module of ``certwright.acme`` reaches past them into the store or the
Authority.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Protocol

from cryptography import x509

from certwright.ca.policy import EnrollmentRequest
from certwright.ca.profiles import Config
from certwright.ca.revocation import Reason
from certwright.ca.service import Held, Issued
from certwright.clock import Clock
from certwright.model.acme import Account, Authorization, Challenge, EabKey, Identifier, Order
from certwright.model.certificates import CertificateRecord, RequestRecord


class AcmeCore(Protocol):
    """The calls ACME makes into the core (``certwright.ca.service.CertificateAuthority``)."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The issuing CA(s) sent after a certificate; ``chain[0]`` signs ours."""

    @property
    def issuer_id(self) -> str: ...

    def unit(self) -> contextlib.AbstractContextManager[None]:
        """One transaction around a whole request; answer after it ends."""

    def audit(self, event: str, *, actor: str, subject: str, data: dict[str, Any],
              at: dt.datetime | None = None) -> None: ...

    def enroll(self, request: EnrollmentRequest) -> Issued | Held: ...

    def held_request(self, request_id: str) -> RequestRecord: ...

    def find_certificate(self, serial: str) -> CertificateRecord | None: ...

    def revoke(self, serial: str, reason: Reason, actor: str) -> CertificateRecord: ...


class AcmeStorage(Protocol):
    """ACME's state: nonce redemptions, accounts, EAB keys, orders, authorizations and
    challenges. Each call joins the current unit of work; conflicts the stored state
    settles are ``certwright.model.acme.AcmeConflict``s."""

    # -- nonces (RFC 8555 6.5) ----------------------------------------------------------

    def nonce_key(self) -> bytes:
        """The MAC key every replica's nonces are made with."""

    def redeem_nonce(self, value: str, expires_at: dt.datetime) -> bool:
        """True for the first redemption of ``value`` on any replica."""

    # -- accounts and EAB keys ----------------------------------------------------------

    def account(self, account_id: str) -> Account | None: ...

    def account_by_key(self, profile: str, thumbprint: str) -> Account | None: ...

    def create_account(self, *, profile: str, thumbprint: str, jwk: dict[str, Any],
                       contact: tuple[str, ...], tos_agreed: bool, eab_kid: str | None
                       ) -> tuple[Account, bool]:
        """(account, created): an existing account of this key comes back uncreated."""

    def update_contact(self, account_id: str, contact: tuple[str, ...]) -> Account: ...

    def change_key(self, account_id: str, jwk: dict[str, Any], thumbprint: str
                   ) -> Account: ...

    def deactivate_account(self, account_id: str) -> Account: ...

    def create_eab(self, profile: str, hmac_key: str, expires_at: dt.datetime | None
                   ) -> str: ...

    def eab(self, kid: str) -> EabKey | None: ...

    # -- authorizations and challenges ---------------------------------------------------

    def authorization(self, authz_id: str) -> Authorization | None: ...

    def authorization_states(self, authz_ids: tuple[str, ...]
                             ) -> list[tuple[str, dt.datetime]]: ...

    def challenge(self, challenge_id: str) -> Challenge | None: ...

    def start_challenge(self, challenge: Challenge) -> bool:
        """pending -> processing, true for one caller only."""

    def finish_challenge(self, challenge: Challenge, error: dict[str, Any] | None,
                         valid_for: dt.timedelta) -> None: ...

    def release_interrupted_challenges(self) -> int: ...

    def deactivate_authorization(self, authz_id: str) -> None: ...

    # -- orders and rate limits ---------------------------------------------------------

    def create_order(self, *, account_id: str, profile: str,
                     identifiers: list[tuple[Identifier, bool]],
                     challenge_types: dict[Identifier, list[str]],
                     not_before: dt.datetime | None, not_after: dt.datetime | None,
                     order_lifetime: dt.timedelta, authz_lifetime: dt.timedelta,
                     replaces: str | None = None) -> Order: ...

    def order(self, order_id: str) -> Order | None: ...

    def move_order(self, order: Order, status: str, error: dict[str, Any] | None
                   ) -> Order: ...

    def begin_finalize(self, order_id: str) -> bool:
        """ready -> processing, true for one caller only."""

    def end_finalize(self, order_id: str, *, serial: str | None = None,
                     request_id: str | None = None, error: dict[str, Any] | None = None
                     ) -> Order: ...

    def orders_of(self, account_id: str, limit: int = 1000) -> list[Order]: ...

    def count_orders(self, *, since: dt.datetime, account_id: str | None = None,
                     profile: str | None = None) -> int: ...

    def oldest_order_since(self, *, since: dt.datetime, account_id: str | None = None,
                           profile: str | None = None) -> dt.datetime | None: ...

    def count_pending_authorizations(self, account_id: str) -> int: ...
