"""Orders and authorizations (RFC 8555 7.4, 7.5; RFC 8738 IP identifiers; RFC 9773 5
"replaces"): newOrder with its rate limits, the order and authorization resources, and
how an order moves on from its authorizations and from an operator's decision."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from certwright.acme import config as acmeconfig
from certwright.acme.accounts import holds
from certwright.acme.auth import Authenticator
from certwright.acme.documents import authz_doc, order_doc, order_url
from certwright.acme.exchange import Ctx, Reply
from certwright.acme.messages import AuthorizationUpdate, NewOrder, RequestedIdentifier
from certwright.acme.ports import AcmeCore, AcmeStorage
from certwright.acme.problems import URN, AcmeProblem, Subproblem, malformed, not_found
from certwright.acme.renewal import RenewalInfo
from certwright.ca import policy
from certwright.ca.profiles import Profile
from certwright.errors import CertwrightError
from certwright.model.acme import (
    Account,
    Authorization,
    CertificateAlreadyReplaced,
    Identifier,
    Order,
)
from certwright.pki.names import Names, normalize_dns

RETRY_AFTER_PROCESSING = "2"
_NOT_VALID = ("invalid", "deactivated", "expired", "revoked")


def owned_order(storage: AcmeStorage, ctx: Ctx, account: Account) -> Order:
    order = storage.order(ctx.params["id"])
    if order is None or order.account_id != account.id or order.profile != ctx.profile_name:
        raise not_found("no such order")
    return order


def owned_authorization(storage: AcmeStorage, ctx: Ctx, account: Account, authz_id: str
                        ) -> Authorization:
    authz = storage.authorization(authz_id)
    if authz is None or authz.account_id != account.id or authz.profile != ctx.profile_name:
        raise not_found("no such authorization")
    return authz


def refresh(storage: AcmeStorage, order: Order, now: dt.datetime) -> Order:
    """Move a pending or ready order on from its authorizations' states (RFC 8555
    7.1.6): invalid once one of them is, ready once all are valid; invalid when it
    expires first."""
    if order.status not in ("pending", "ready"):
        return order
    error: dict[str, Any] | None = None
    if order.expires_at <= now:
        status = "invalid"
        error = {"type": URN + "malformed", "detail": "the order expired", "status": 400}
    else:
        statuses = ["expired" if s in ("pending", "valid") and expires <= now else s
                    for s, expires in storage.authorization_states(order.authz_ids)]
        if any(s in _NOT_VALID for s in statuses):
            status = "invalid"
            error = {"type": URN + "unauthorized",
                     "detail": "an authorization of this order is not valid", "status": 403}
        elif statuses and all(s == "valid" for s in statuses):
            status = "ready"
        else:
            status = "pending"
    if status == order.status:
        return order
    return storage.move_order(order, status, error)


def advance(core: AcmeCore, storage: AcmeStorage, order: Order) -> Order:
    """Bring an order up to date: its authorizations, or the operator's decision on the
    request the RA held at finalize."""
    order = refresh(storage, order, core.clock.now())
    if order.status == "processing" and order.request_id:
        held = core.held_request(order.request_id)
        if held.state == "issued" and held.serial:
            order = storage.end_finalize(order.id, serial=held.serial)
        elif held.state == "rejected":
            order = storage.end_finalize(order.id, error={
                "type": URN + "unauthorized",
                "detail": f"an operator rejected the request: {held.reason}",
                "status": 403})
    return order


def _identifiers(profile: Profile, requested: tuple[RequestedIdentifier, ...]
                 ) -> list[tuple[Identifier, bool]]:
    """The order's identifiers, normalized and each held to the profile's name rules at
    once; (identifier, wildcard) in the order sent, without repeats."""
    if len(requested) > profile.names.max_names:
        raise AcmeProblem("rejectedIdentifier",
                          f"at most {profile.names.max_names} identifiers per order")
    out: dict[Identifier, bool] = {}
    problems: list[Subproblem] = []
    for item in requested:
        try:
            if item.type == "dns":
                ident = Identifier("dns", normalize_dns(item.value))
                names = Names(dns=(ident.value,))
            elif item.type == "ip":
                addr = ipaddress.ip_address(item.value)
                ident = Identifier("ip", str(addr))
                names = Names(ip=(addr,))
            else:
                problems.append(Subproblem("unsupportedIdentifier",
                                           f"identifier type {item.type!r} is not supported",
                                           item.as_json()))
                continue
            policy.check_names(profile, names)
        except ValueError:
            problems.append(Subproblem("malformed", f"{item.value!r} is not an IP address",
                                       item.as_json()))
            continue
        except CertwrightError as e:
            problems.append(Subproblem("rejectedIdentifier", str(e), item.as_json()))
            continue
        out[ident] = ident.value.startswith("*.")
    if problems:
        raise AcmeProblem(problems[0].type if len(problems) == 1 else "rejectedIdentifier",
                          "; ".join(p.detail for p in problems), 400, subproblems=problems)
    return list(out.items())


def _challenge_types(profile: Profile, ident: Identifier, wildcard: bool) -> list[str]:
    if wildcard:
        types = ["dns-01"]  # RFC 8555 7.1.3: wildcards only through dns-01
    elif ident.type == "ip":
        types = ["http-01", "tls-alpn-01"]  # RFC 8738 7: no dns-01 for IP addresses
    else:
        types = ["http-01", "dns-01", "tls-alpn-01"]
    types = [t for t in types if t in acmeconfig.profile_settings(profile).challenges]
    if not types:
        raise AcmeProblem("rejectedIdentifier",
                          f"no challenge type this profile offers can prove {ident.value}",
                          subproblems=[Subproblem("rejectedIdentifier",
                                                  "no usable challenge type",
                                                  ident.as_json())])
    return types


class Orders:
    def __init__(self, core: AcmeCore, storage: AcmeStorage, auth: Authenticator,
                 renewal: RenewalInfo) -> None:
        self.core = core
        self.storage = storage
        self.auth = auth
        self.renewal = renewal

    def _rate_limit(self, ctx: Ctx, account: Account) -> None:
        limits = acmeconfig.profile_settings(ctx.profile).rate_limits
        now = self.core.clock.now()
        since = now - limits.window
        for scope, kwargs, limit in (
            ("account", {"account_id": account.id}, limits.orders_per_account),
            ("profile", {"profile": ctx.profile_name}, limits.orders_per_profile),
        ):
            if self.storage.count_orders(since=since, **kwargs) >= limit:
                oldest = self.storage.oldest_order_since(since=since, **kwargs)
                wait = max(1, int(((oldest or now) + limits.window - now).total_seconds()) + 1)
                raise AcmeProblem("rateLimited",
                                  f"too many new orders for this {scope}: {limit} per "
                                  f"{int(limits.window.total_seconds())} s",
                                  429, headers={"Retry-After": str(wait)})
        if self.storage.count_pending_authorizations(account.id) >= \
                limits.pending_authorizations_per_account:
            raise AcmeProblem("rateLimited", "too many pending authorizations for this "
                              "account; complete or deactivate some first", 429,
                              headers={"Retry-After": "60"})

    def _check_replaces(self, account: Account, certid: str,
                        identifiers: list[tuple[Identifier, bool]]) -> None:
        """RFC 9773 5: the replaced certificate is the account's and shares a name."""
        record = self.renewal.certificate(certid)
        if record is None or not holds(account, record.requester):
            raise malformed("replaces names no certificate this account holds")
        wanted = {f"{i.type}:{i.value}" for i, _ in identifiers}
        if not wanted & set(record.names):
            raise malformed("the replaced certificate shares no identifier with this order")

    def new_order(self, ctx: Ctx) -> Reply:
        signed = self.auth.by_account(ctx)
        account = signed.account
        msg = NewOrder.from_json(signed.payload())
        identifiers = _identifiers(ctx.profile, msg.identifiers)
        try:
            policy.validity_window(ctx.profile, msg.not_before, msg.not_after,
                                   self.core.clock.now())
        except CertwrightError as e:
            raise malformed(str(e)) from None
        types = {i: _challenge_types(ctx.profile, i, w) for i, w in identifiers}
        if msg.replaces is not None:
            self._check_replaces(account, msg.replaces, identifiers)
        self._rate_limit(ctx, account)
        acme = acmeconfig.profile_settings(ctx.profile)
        try:
            order = self.storage.create_order(
                account_id=account.id, profile=ctx.profile_name, identifiers=identifiers,
                challenge_types=types, not_before=msg.not_before, not_after=msg.not_after,
                order_lifetime=acme.order_lifetime,
                authz_lifetime=acme.pending_authorization_lifetime, replaces=msg.replaces)
        except CertificateAlreadyReplaced as e:
            raise AcmeProblem("alreadyReplaced", e.detail, 409) from None
        order = refresh(self.storage, order, self.core.clock.now())
        return Reply(201, order_doc(ctx.base, order),
                     headers={"Location": order_url(ctx.base, order.id)})

    def order(self, ctx: Ctx) -> Reply:
        account = self.auth.post_as_get(ctx)
        order = advance(self.core, self.storage, owned_order(self.storage, ctx, account))
        headers = {"Retry-After": RETRY_AFTER_PROCESSING} if order.status == "processing" else {}
        return Reply(200, order_doc(ctx.base, order), headers=headers)

    def authorization(self, ctx: Ctx) -> Reply:
        signed = self.auth.by_account(ctx)
        authz = owned_authorization(self.storage, ctx, signed.account, ctx.params["id"])
        if not signed.post_as_get:
            AuthorizationUpdate.from_json(signed.payload())
            self.storage.deactivate_authorization(authz.id)
            authz = owned_authorization(self.storage, ctx, signed.account, authz.id)
        return Reply(200, authz_doc(ctx.base, authz, self.core.clock.now()))
