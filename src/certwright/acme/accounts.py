"""Accounts (RFC 8555 7.3): newAccount with External Account Binding, the account
resource (contacts, deactivation), its orders list, and key rollover."""

from __future__ import annotations

import json

from certwright.acme import config as acmeconfig
from certwright.acme import jws
from certwright.acme.auth import Authenticator, not_valid
from certwright.acme.documents import account_doc, account_url, order_url
from certwright.acme.exchange import Ctx, Reply
from certwright.acme.messages import AccountUpdate, ExternalAccountBinding, KeyChange, NewAccount
from certwright.acme.ports import AcmeCore, AcmeStorage
from certwright.acme.problems import AcmeProblem, malformed
from certwright.ca.policy import Requester
from certwright.model.acme import Account, EabKeyAlreadyBound

EAB_BOUND = "this external account binding key is already bound to an account"


def requester(account: Account) -> Requester:
    """Who an account is to the core, its audit log and its certificates' records."""
    return Requester("acme-account", account.id)


def holds(account: Account, recorded_requester: str) -> bool:
    """Did ``account`` request the certificate whose record names this requester?"""
    return recorded_requester == str(requester(account))


class Accounts:
    def __init__(self, core: AcmeCore, storage: AcmeStorage, auth: Authenticator) -> None:
        self.core = core
        self.storage = storage
        self.auth = auth

    def _audit(self, event: str, account: Account, data: dict[str, object]) -> None:
        self.core.audit(event, actor=str(requester(account)), subject=account.id, data=data)

    def new_account(self, ctx: Ctx) -> Reply:
        signed = self.auth.signed(ctx, allow_jwk=True)
        if signed.env.jwk is None:
            raise malformed("newAccount must be signed with a jwk, not a kid")
        payload = signed.payload()
        jwk = jws.public_jwk(signed.env.jwk)
        thumb = jws.key_thumbprint(signed.env.jwk)
        existing = self.storage.account_by_key(ctx.profile_name, thumb)
        if existing is not None and existing.status != "valid":
            raise not_valid(existing)
        if existing is not None:
            # RFC 8555 7.3.1: an existing account's key gets its URL, whatever was asked.
            return Reply(200, account_doc(ctx.base, existing),
                         headers={"Location": account_url(ctx.base, existing.id)})
        msg = NewAccount.from_json(payload)
        if msg.only_return_existing:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key", 400)
        acme = acmeconfig.profile_settings(ctx.profile)
        if acme.terms_of_service and not msg.terms_of_service_agreed:
            raise AcmeProblem("userActionRequired",
                              "you must agree to the terms of service", 403,
                              headers={"Link": f'<{acme.terms_of_service}>;rel="terms-of-service"'})
        eab_kid = None
        if msg.external_account_binding is not None:
            eab_kid = self._check_eab(ctx, msg.external_account_binding, jwk)
        elif acme.eab_required:
            raise AcmeProblem("externalAccountRequired",
                              "this directory requires an external account binding", 400)
        try:
            account, created = self.storage.create_account(
                profile=ctx.profile_name, thumbprint=thumb, jwk=jwk, contact=msg.contact,
                tos_agreed=msg.terms_of_service_agreed, eab_kid=eab_kid)
        except EabKeyAlreadyBound:
            raise AcmeProblem("unauthorized", EAB_BOUND, 403) from None
        if created:
            self._audit("acme.account.created", account,
                        {"profile": ctx.profile_name, "thumbprint": thumb,
                         "contact": list(msg.contact), "eab_kid": eab_kid})
        return Reply(201 if created else 200, account_doc(ctx.base, account),
                     headers={"Location": account_url(ctx.base, account.id)})

    def _check_eab(self, ctx: Ctx, eab: ExternalAccountBinding, account_jwk: dict[str, object]
                   ) -> str:
        """RFC 8555 7.3.4: the binding is MACed with a key of this profile, unused and
        unexpired, for the newAccount URL, over the account's key. Its kid comes back."""
        found = self.storage.eab(eab.kid) if eab.kid is not None else None
        if found is None:
            raise AcmeProblem("unauthorized", "unknown external account binding key id", 403)
        if found.profile != ctx.profile_name:
            raise AcmeProblem("unauthorized", "this EAB key belongs to another profile", 403)
        if found.expires_at is not None and found.expires_at <= self.core.clock.now():
            raise AcmeProblem("unauthorized", "this EAB key has expired", 403)
        if found.account_id is not None:
            raise AcmeProblem("unauthorized", EAB_BOUND, 403)
        env = jws.verify_hmac(eab.jws, jws.b64decode(found.hmac_key, "EAB key"))
        if env.protected.get("url") != f"{ctx.base}/new-account":
            raise AcmeProblem("unauthorized", "the EAB url must be the newAccount URL", 403)
        try:
            inner = json.loads(env.payload)
        except ValueError:
            raise malformed("the EAB payload is not a JWK") from None
        if not isinstance(inner, dict) or jws.public_jwk(inner) != account_jwk:
            raise AcmeProblem("unauthorized", "the EAB payload is not the account key", 403)
        return found.kid

    def account(self, ctx: Ctx) -> Reply:
        signed = self.auth.by_account(ctx)
        account = signed.account
        if account.id != ctx.params["id"]:
            raise AcmeProblem("unauthorized", "the kid does not match this account", 403)
        if signed.post_as_get:
            return Reply(200, account_doc(ctx.base, account))
        msg = AccountUpdate.from_json(signed.payload())
        if msg.status == "deactivated":
            account = self.storage.deactivate_account(account.id)
            self._audit("acme.account.deactivated", account, {})
        elif msg.status is not None and msg.status != account.status:
            raise malformed("the only status a client may set is deactivated")
        if msg.contact is not None:
            account = self.storage.update_contact(account.id, msg.contact)
        return Reply(200, account_doc(ctx.base, account))

    def orders(self, ctx: Ctx) -> Reply:
        account = self.auth.post_as_get(ctx)
        if account.id != ctx.params["id"]:
            raise AcmeProblem("unauthorized", "these are another account's orders", 403)
        return Reply(200, {"orders": [order_url(ctx.base, o.id)
                                      for o in self.storage.orders_of(account.id)]})

    def key_change(self, ctx: Ctx) -> Reply:
        """RFC 8555 7.3.5, with each of its checks."""
        signed = self.auth.by_account(ctx)
        account = signed.account
        try:
            inner_obj = json.loads(signed.env.payload)
        except ValueError:
            raise malformed("the keyChange payload is not a JWS") from None
        inner = jws.parse(inner_obj, inner=True)
        if inner.jwk is None:
            raise malformed("the inner JWS must carry the new key as jwk")
        new_key = jws.import_key(inner.jwk)
        jws.verify(inner, new_key)
        if inner.url != signed.env.url:
            raise malformed("the inner JWS url differs from the outer one")
        msg = KeyChange.from_json(inner.json_payload())
        if msg.account != signed.env.kid:
            raise malformed("the inner payload's account is not the outer kid")
        if jws.key_thumbprint(msg.old_key) != account.thumbprint:
            raise malformed("oldKey is not the account's current key")
        new_thumb = jws.key_thumbprint(inner.jwk)
        if new_thumb == account.thumbprint:
            raise malformed("the new key is the current key")
        other = self.storage.account_by_key(ctx.profile_name, new_thumb)
        if other is not None:
            # RFC 8555 7.3.5: 409 Conflict, with the other account's URL.
            raise AcmeProblem("malformed", "the new key belongs to another account", 409,
                              headers={"Location": account_url(ctx.base, other.id)})
        # A concurrent rollover to the same key is AccountKeyInUse: 409 malformed too.
        updated = self.storage.change_key(account.id, jws.public_jwk(inner.jwk), new_thumb)
        self._audit("acme.account.key_changed", account,
                    {"old": account.thumbprint, "new": new_thumb})
        return Reply(200, account_doc(ctx.base, updated))
