"""The resources the server sends (RFC 8555 section 7.1): accounts, orders,
authorizations and challenges as JSON objects, their URLs under the directory ``base``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from certwright.model.acme import Account, Authorization, Challenge, Order


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def account_url(base: str, account_id: str) -> str:
    return f"{base}/acct/{account_id}"


def order_url(base: str, order_id: str) -> str:
    return f"{base}/order/{order_id}"


def account_doc(base: str, a: Account) -> dict[str, Any]:
    doc: dict[str, Any] = {"status": a.status, "contact": list(a.contact),
                           "orders": f"{account_url(base, a.id)}/orders",
                           "createdAt": rfc3339(a.created_at)}
    if a.tos_agreed:
        doc["termsOfServiceAgreed"] = True
    return doc


def order_doc(base: str, o: Order) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": o.status,
        "expires": rfc3339(o.expires_at),
        "identifiers": [i.as_json() for i in o.identifiers],
        "authorizations": [f"{base}/authz/{a}" for a in o.authz_ids],
        "finalize": f"{order_url(base, o.id)}/finalize",
    }
    if o.not_before:
        doc["notBefore"] = rfc3339(o.not_before)
    if o.not_after:
        doc["notAfter"] = rfc3339(o.not_after)
    if o.error:
        doc["error"] = o.error
    if o.serial:
        doc["certificate"] = f"{base}/cert/{o.serial}"
    if o.replaces:
        doc["replaces"] = o.replaces
    return doc


def challenge_doc(base: str, c: Challenge) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": c.type, "url": f"{base}/chall/{c.id}",
                           "status": c.status, "token": c.token}
    if c.validated_at and c.status == "valid":
        doc["validated"] = rfc3339(c.validated_at)
    if c.error:
        doc["error"] = c.error
    return doc


def authz_doc(base: str, a: Authorization, now: dt.datetime) -> dict[str, Any]:
    status = a.status
    if status in ("pending", "valid") and a.expires_at <= now:
        status = "expired"
    # RFC 8555 7.1.4: for a wildcard order's authorization the identifier "MUST
    # contain the value of the identifier without the wildcard prefix" and "wildcard"
    # is true (lego otherwise looks for _acme-challenge.*.NAME).
    identifier = {"type": a.identifier.type,
                  "value": a.identifier.value.removeprefix("*.") if a.wildcard
                  else a.identifier.value}
    doc: dict[str, Any] = {
        "identifier": identifier, "status": status,
        "expires": rfc3339(a.expires_at),
        "challenges": [challenge_doc(base, c) for c in a.challenges
                       if status == "pending" or c.status != "pending"],
    }
    if a.wildcard:
        doc["wildcard"] = True
    return doc
