"""ACME's records (RFC 8555 section 7.1): accounts, orders, authorizations, challenges and
External Account Binding keys, as the ACME storage hands them to the front-end.

Boulder keeps registrations, orders and authorizations in ``core/objects.go``, below both
its storage authority and its web front-end; these are ours. The refusals the storage
settles with a unique key or a conditional UPDATE are CertwrightError(CONFLICT)
subclasses, so the front-end can refine them into ACME's own problem types.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from certwright.errors import CertwrightError, ErrorKind

__all__ = [
    "Account", "AccountKeyInUse", "AcmeConflict", "Authorization", "CertificateAlreadyReplaced",
    "Challenge", "EabKey", "EabKeyAlreadyBound", "Identifier", "Order",
]


@dataclasses.dataclass(frozen=True)
class Identifier:
    type: str  # "dns" | "ip"
    value: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclasses.dataclass(frozen=True)
class Account:
    id: str
    profile: str
    thumbprint: str  # RFC 7638 SHA-256 thumbprint of the key, base64url
    jwk: dict[str, Any]
    status: str  # valid | deactivated | revoked
    contact: tuple[str, ...]
    tos_agreed: bool
    eab_kid: str | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class EabKey:
    """An External Account Binding key (RFC 8555 7.3.4), made by an operator."""

    kid: str
    profile: str
    hmac_key: str  # base64url
    expires_at: dt.datetime | None
    account_id: str | None  # the account it is bound to, once used


@dataclasses.dataclass(frozen=True)
class Challenge:
    id: str
    authz_id: str
    type: str
    token: str
    status: str  # pending | processing | valid | invalid
    validated_at: dt.datetime | None
    error: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Authorization:
    id: str
    account_id: str
    profile: str
    identifier: Identifier
    wildcard: bool
    status: str  # pending | valid | invalid | deactivated | expired | revoked
    expires_at: dt.datetime
    created_at: dt.datetime
    challenges: tuple[Challenge, ...] = ()


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    account_id: str
    profile: str
    status: str  # pending | ready | processing | valid | invalid
    identifiers: tuple[Identifier, ...]
    authz_ids: tuple[str, ...]
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    expires_at: dt.datetime
    error: dict[str, Any] | None
    serial: str | None
    request_id: str | None
    created_at: dt.datetime
    replaces: str | None = None


class AcmeConflict(CertwrightError):
    """A write the stored state refused (a unique key, a conditional UPDATE)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorKind.CONFLICT, detail)


class EabKeyAlreadyBound(AcmeConflict):
    def __init__(self, kid: str) -> None:
        super().__init__(f"external account binding key {kid} is already bound to an account")
        self.kid = kid


class AccountKeyInUse(AcmeConflict):
    def __init__(self) -> None:
        super().__init__("the new key belongs to another account")


class CertificateAlreadyReplaced(AcmeConflict):
    def __init__(self, certid: str) -> None:
        super().__init__("another order already replaces that certificate")
        self.certid = certid
