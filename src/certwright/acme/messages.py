"""The JSON payloads clients send (RFC 8555 section 7), declared field by field.

Each message is a frozen dataclass built by ``from_json`` from a JWS payload; a field of
the wrong type or shape is refused there with a malformed problem that names it, so the
handlers work with typed values only (certbot's ``acme/messages.py`` declares the same
resources). Fields a message does not declare are ignored, and a null field is an absent
one. Checks that need state (is this key bound, may this profile have this name) are the
handlers'.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from cryptography import x509

from certwright.acme import jws
from certwright.acme.problems import AcmeProblem, malformed
from certwright.ca.revocation import Reason
from certwright.errors import CertwrightError
from certwright.pki import csr as csrlib
from certwright.pki.names import normalize_dns

MAX_CONTACTS = 10
# RFC 8555 7.6 / RFC 5280 5.3.1: the reason codes a subscriber may give.
REVOCATION_REASONS = {0: Reason.unspecified, 1: Reason.key_compromise,
                      3: Reason.affiliation_changed, 4: Reason.superseded,
                      5: Reason.cessation_of_operation, 9: Reason.privilege_withdrawn}


def _flag(obj: dict[str, Any], name: str) -> bool:
    value = obj.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise malformed(f"{name} must be true or false")
    return value


def _text(obj: dict[str, Any], name: str, what: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise malformed(f"{name} must be {what}")
    return value


def parse_rfc3339(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise malformed(f"{field} must be an RFC 3339 date-time string")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise malformed(f"{field} {value!r} is not an RFC 3339 date-time") from None
    if t.tzinfo is None:
        raise malformed(f"{field} must carry a time zone")
    return t.astimezone(dt.UTC)


def _date(obj: dict[str, Any], name: str) -> dt.datetime | None:
    value = obj.get(name)
    return None if value is None else parse_rfc3339(value, name)


def parse_contacts(value: Any) -> tuple[str, ...]:
    """RFC 8555 7.3: "contact" is an array of URLs. Servers MUST support mailto; it is
    the only scheme we support, with one address per URL."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise malformed("contact must be a list of URLs")
    if len(value) > MAX_CONTACTS:
        raise malformed(f"at most {MAX_CONTACTS} contacts")
    for c in value:
        if not c.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", f"contact {c!r} is not a mailto URL")
        addr = c[len("mailto:"):]
        local, at, domain = addr.rpartition("@")
        if not at or not local or "," in addr or "?" in addr:
            raise AcmeProblem("invalidContact", f"contact {c!r} is not one e-mail address")
        try:
            normalize_dns(domain)
        except CertwrightError:
            raise AcmeProblem("invalidContact", f"contact {c!r} has an invalid domain"
                              ) from None
    return tuple(value)


# -- accounts (RFC 8555 7.3) -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExternalAccountBinding:
    """RFC 8555 7.3.4: a flattened JWS, MACed with the EAB key ``kid`` names, whose
    payload is the account key. Its MAC is checked once the key is found."""

    jws: dict[str, Any]
    kid: str | None

    @classmethod
    def from_json(cls, obj: Any) -> ExternalAccountBinding:
        if not isinstance(obj, dict) or not isinstance(obj.get("protected"), str):
            raise malformed("externalAccountBinding is not a flattened JWS")
        try:
            protected = json.loads(jws.b64decode(obj["protected"], "EAB protected header"))
        except ValueError:
            raise malformed("externalAccountBinding protected header is not JSON") from None
        kid = protected.get("kid") if isinstance(protected, dict) else None
        return cls(obj, kid if isinstance(kid, str) else None)


@dataclasses.dataclass(frozen=True)
class NewAccount:
    contact: tuple[str, ...] = ()
    terms_of_service_agreed: bool = False
    only_return_existing: bool = False
    external_account_binding: ExternalAccountBinding | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NewAccount:
        if _flag(obj, "onlyReturnExisting"):
            # RFC 8555 7.3.1: the server only looks the key up; nothing else counts.
            return cls(only_return_existing=True)
        contact = obj.get("contact")
        eab = obj.get("externalAccountBinding")
        return cls(contact=() if contact is None else parse_contacts(contact),
                   terms_of_service_agreed=_flag(obj, "termsOfServiceAgreed"),
                   external_account_binding=(None if eab is None
                                             else ExternalAccountBinding.from_json(eab)))


@dataclasses.dataclass(frozen=True)
class AccountUpdate:
    """RFC 8555 7.3.2 and 7.3.6: new contacts, or "deactivated"."""

    status: str | None = None
    contact: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AccountUpdate:
        contact = obj.get("contact")
        return cls(status=_text(obj, "status", "a status string"),
                   contact=None if contact is None else parse_contacts(contact))


@dataclasses.dataclass(frozen=True)
class KeyChange:
    """RFC 8555 7.3.5: the payload of the inner JWS, signed by the new key."""

    account: str
    old_key: dict[str, Any]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> KeyChange:
        account = obj.get("account")
        if not isinstance(account, str):
            raise malformed("the inner payload's account is not the outer kid")
        old_key = obj.get("oldKey")
        if not isinstance(old_key, dict):
            raise malformed("oldKey is not the account's current key")
        return cls(account, old_key)


# -- orders, authorizations, challenges (RFC 8555 7.4, 7.5) ------------------------------


@dataclasses.dataclass(frozen=True)
class RequestedIdentifier:
    """One identifier as sent: its type may be one we do not support, which the order
    refuses with a subproblem naming it."""

    type: str
    value: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclasses.dataclass(frozen=True)
class NewOrder:
    identifiers: tuple[RequestedIdentifier, ...]
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    replaces: str | None = None  # RFC 9773 5: the certID of the certificate it replaces

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NewOrder:
        value = obj.get("identifiers")
        if not isinstance(value, list) or not value:
            raise malformed("identifiers must be a non-empty list")
        identifiers = []
        for item in value:
            if not (isinstance(item, dict) and isinstance(item.get("type"), str)
                    and isinstance(item.get("value"), str)):
                raise malformed("each identifier is an object with type and value")
            identifiers.append(RequestedIdentifier(item["type"], item["value"]))
        return cls(tuple(identifiers), _date(obj, "notBefore"), _date(obj, "notAfter"),
                   _text(obj, "replaces", "a certID string"))


@dataclasses.dataclass(frozen=True)
class AuthorizationUpdate:
    """RFC 8555 7.5.2: a client may only deactivate an authorization."""

    status: str = "deactivated"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> AuthorizationUpdate:
        if obj.get("status") != "deactivated":
            raise malformed("the only status a client may set is deactivated")
        return cls()


@dataclasses.dataclass(frozen=True)
class ChallengeResponse:
    """RFC 8555 7.5.1: "the client sends the server an empty JSON body ("{}")" to ask
    for validation. Older clients send the key authorization too: it is ignored."""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ChallengeResponse:
        return cls()


@dataclasses.dataclass(frozen=True)
class Finalize:
    """RFC 8555 7.4: the CSR, base64url DER. A CSR that does not decode or whose
    signature does not verify is badCSR: the client can send another."""

    csr: x509.CertificateSigningRequest

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Finalize:
        value = obj.get("csr")
        if value is None:
            raise malformed("finalize needs csr, a base64url DER CSR")
        der = jws.b64decode(value, "csr")
        try:
            return cls(csrlib.load(der))
        except CertwrightError as e:
            raise AcmeProblem("badCSR", e.detail) from None


# -- certificates (RFC 8555 7.6) ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RevokeCert:
    certificate: x509.Certificate
    der: bytes
    reason: Reason = Reason.unspecified

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RevokeCert:
        value = obj.get("certificate")
        if value is None:
            raise malformed("revokeCert needs certificate, a base64url DER certificate")
        der = jws.b64decode(value, "certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise malformed("certificate is not a DER certificate") from None
        code = obj.get("reason")
        if code is None:
            code = 0
        elif (not isinstance(code, int) or isinstance(code, bool)
              or code not in REVOCATION_REASONS):
            raise AcmeProblem("badRevocationReason",
                              f"reason {code!r} is not allowed; use one of "
                              f"{sorted(REVOCATION_REASONS)}")
        return cls(cert, der, REVOCATION_REASONS[code])
