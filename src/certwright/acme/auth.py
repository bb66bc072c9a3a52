"""Request authentication (RFC 8555 sections 6.2 to 6.5): the JWS, its key or account,
the request URL and the nonce, for every POST."""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Any

from certwright.acme import jws
from certwright.acme.directory import Nonces
from certwright.acme.exchange import Ctx
from certwright.acme.jws import Envelope
from certwright.acme.ports import AcmeStorage
from certwright.acme.problems import AcmeProblem, malformed
from certwright.model.acme import Account

ACCOUNT_KEY_CACHE = 4096  # imported account keys kept


@dataclasses.dataclass(frozen=True)
class Signed:
    """A POST whose signature, URL and nonce were checked: by ``account`` (a kid), or by
    a bare ``key`` (a jwk: newAccount, revokeCert by the certificate's key)."""

    env: Envelope
    account: Account | None
    key: jws.AnyKey

    @property
    def post_as_get(self) -> bool:
        return self.env.payload == b""

    def payload(self) -> dict[str, Any]:
        return self.env.json_payload()


@dataclasses.dataclass(frozen=True)
class ByAccount(Signed):
    account: Account


def not_valid(account: Account) -> AcmeProblem:
    # RFC 8555 7.3.6: "If a server receives a POST or POST-as-GET from a deactivated
    # account, it MUST return an error response with status code 401 (Unauthorized)".
    return AcmeProblem("unauthorized", f"the account is {account.status}", 401)


class Authenticator:
    def __init__(self, storage: AcmeStorage, nonces: Nonces) -> None:
        self.storage = storage
        self.nonces = nonces
        self._account_keys: dict[tuple[str, str], jws.AnyKey] = {}

    def _account_key(self, account: Account) -> jws.AnyKey:
        """The account's public key, imported once (joserfc's JWK import costs about as
        much as the signature check). Keyed by the thumbprint too: a key change is a new
        entry."""
        cache_key = (account.id, account.thumbprint)
        key = self._account_keys.get(cache_key)
        if key is None:
            key = jws.import_key(account.jwk)
            if len(self._account_keys) >= ACCOUNT_KEY_CACHE:
                self._account_keys.clear()
            self._account_keys[cache_key] = key
        return key

    def signed(self, ctx: Ctx, *, allow_jwk: bool) -> Signed:
        """Check a POST signed by an account (kid) or, where ``allow_jwk``, by a jwk."""
        if ctx.content_type != "application/jose+json":
            raise AcmeProblem("malformed", "Content-Type must be application/jose+json", 415)
        env = jws.parse(ctx.body)
        if env.url != ctx.url:
            raise AcmeProblem("unauthorized", f"the JWS url {env.url!r} is not the request "
                              "URL", 403)
        account: Account | None = None
        if env.jwk is not None:
            if not allow_jwk:
                raise malformed("this resource needs a kid (an account URL), not a jwk")
            key = jws.import_key(env.jwk)
        else:
            kid = env.kid or ""
            # Only the path is compared: replicas behind different names share accounts.
            path = urllib.parse.urlsplit(kid).path
            prefix = f"/acme/{ctx.profile_name}/acct/"
            account = (self.storage.account(path[len(prefix):])
                       if path.startswith(prefix) and "/" not in path[len(prefix):] else None)
            if account is None or account.profile != ctx.profile_name:
                raise AcmeProblem("accountDoesNotExist", "no account with that kid", 400)
            if account.status != "valid":
                raise not_valid(account)
            key = self._account_key(account)
        jws.verify(env, key)
        redeemed, ctx.reply_nonce = self.nonces.redeem_and_issue(env.nonce or "")
        if not redeemed:
            raise AcmeProblem("badNonce", "the nonce is unknown, used or expired", 400)
        return Signed(env, account, key)

    def by_account(self, ctx: Ctx) -> ByAccount:
        """Check a POST signed by a valid account of this directory (a kid)."""
        signed = self.signed(ctx, allow_jwk=False)
        if signed.account is None:
            raise AcmeProblem("accountDoesNotExist", "no account", 400)
        return ByAccount(signed.env, signed.account, signed.key)

    def post_as_get(self, ctx: Ctx) -> Account:
        """Check a POST-as-GET (RFC 8555 6.3): signed by an account, empty payload."""
        signed = self.by_account(ctx)
        if not signed.post_as_get:
            raise malformed("this resource is fetched with POST-as-GET (an empty payload)")
        return signed.account
