"""Challenges (RFC 8555 7.5.1) and the validations they start, which run after the
reply, on the validation authority (``validation.py``); and CAA checked again before
finalize for validations older than CA/B Forum BR 3.2.2.8's 8 hours."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from certwright.acme import config as acmeconfig
from certwright.acme.accounts import requester
from certwright.acme.auth import Authenticator
from certwright.acme.documents import challenge_doc
from certwright.acme.exchange import Ctx, Reply, Threads
from certwright.acme.messages import ChallengeResponse
from certwright.acme.orders import owned_authorization
from certwright.acme.ports import AcmeCore, AcmeStorage
from certwright.acme.problems import AcmeProblem, Subproblem, malformed, not_found
from certwright.acme.validation import Validator
from certwright.model.acme import Account, Authorization, Challenge

log = logging.getLogger("certwright.acme")

# CA/B Forum Baseline Requirements 3.2.2.8: CAA is checked within 8 hours before issuance.
CAA_RECHECK_AFTER = dt.timedelta(hours=8)


class Challenges:
    def __init__(self, core: AcmeCore, storage: AcmeStorage, auth: Authenticator,
                 validator: Validator, threads: Threads) -> None:
        self.core = core
        self.storage = storage
        self.auth = auth
        self.validator = validator
        self.threads = threads
        # At most this many validations connect out at once (acme.max_concurrent_validations).
        self._validations = asyncio.Semaphore(acmeconfig.settings(core.config).max_concurrent_validations)

    def challenge(self, ctx: Ctx) -> Reply:
        signed = self.auth.by_account(ctx)
        chal = self.storage.challenge(ctx.params["id"])
        if chal is None:
            raise not_found("no such challenge")
        authz = owned_authorization(self.storage, ctx, signed.account, chal.authz_id)
        background = None
        if not signed.post_as_get:
            ChallengeResponse.from_json(signed.payload())
            if chal.status == "pending" and self.storage.start_challenge(chal):
                background = self._validate_later(ctx, signed.account, authz, chal)
            chal = self.storage.challenge(chal.id) or chal
        headers = {"Link": f'<{ctx.base}/authz/{authz.id}>;rel="up"'}
        if chal.status == "processing":
            headers["Retry-After"] = "1"
        return Reply(200, challenge_doc(ctx.base, chal), headers=headers,
                     background=background)

    # -- validation, after the reply ----------------------------------------------------

    def _validate_later(self, ctx: Ctx, account: Account, authz: Authorization,
                        chal: Challenge) -> Callable[[], Coroutine[Any, Any, None]]:
        key_auth = f"{chal.token}.{account.thumbprint}"
        profile = ctx.profile
        ident = authz.identifier

        async def run() -> None:
            error: dict[str, Any] | None = None
            # One deadline for everything one validation does (CAA climb, every address).
            deadline = self.validator.settings.timeout * 3
            try:
                async with self._validations, asyncio.timeout(deadline):
                    host = ident.value.removeprefix("*.")
                    if acmeconfig.profile_settings(profile).check_caa and ident.type == "dns":
                        await self.validator.check_caa(ident.value, authz.wildcard,
                                                       acmeconfig.profile_settings(profile).caa_identities)
                    nets = acmeconfig.profile_settings(profile).validation_networks
                    if chal.type == "http-01":
                        await self.validator.http01(host, chal.token, key_auth, nets)
                    elif chal.type == "dns-01":
                        await self.validator.dns01(ident.value, key_auth)
                    elif chal.type == "tls-alpn-01":
                        await self.validator.tlsalpn01(ident.type, host, key_auth, nets)
                    else:
                        raise malformed(f"unknown challenge type {chal.type}")
            except TimeoutError:
                error = AcmeProblem("connection", f"validation took more than {deadline:g} s"
                                    ).as_json()
            except AcmeProblem as p:
                error = p.as_json()
            except Exception:
                log.exception("validation of %s for %s failed", chal.type, ident.value)
                error = AcmeProblem("serverInternal", "validation failed", 500).as_json()
            await self.threads.run(self._record_validation, account, authz, chal, error)

        return run

    def _record_validation(self, account: Account, authz: Authorization, chal: Challenge,
                           error: dict[str, Any] | None) -> None:
        profile = self.core.config.profiles.get(authz.profile)
        valid_for = (acmeconfig.profile_settings(profile).authorization_lifetime if profile is not None
                     else dt.timedelta(days=1))
        with self.core.unit():  # the result and its audit record: one commit
            self.storage.finish_challenge(chal, error, valid_for)
            self.core.audit(
                "acme.challenge.validated" if error is None else "acme.challenge.failed",
                actor=str(requester(account)), subject=authz.identifier.value,
                data={"type": chal.type, "identifier": authz.identifier.as_json(),
                      "authorization": authz.id, "error": error})

    # -- CAA again before finalize ------------------------------------------------------

    async def caa_recheck(self, ctx: Ctx) -> None:
        """CAA again for names whose authorization was validated more than
        CAA_RECHECK_AFTER ago (CA/B Forum BR 3.2.2.8: CAA is checked within 8 hours
        before issuance; a reused authorization can be 30 days old).

        Done before the request's store transaction, which holds the write lock, so that
        DNS lookups never hold it. The result goes into ``ctx.caa_problem``, which
        finalize reveals only after it has authenticated the request and found the order
        to be the requester's."""
        if not acmeconfig.profile_settings(ctx.profile).check_caa:
            return
        authzs = await self.threads.run(self._order_authorizations, ctx)
        stale = self.core.clock.now() - CAA_RECHECK_AFTER
        subproblems = []
        for authz in authzs:
            if authz is None or authz.identifier.type != "dns":
                continue
            validated = [c.validated_at for c in authz.challenges
                         if c.status == "valid" and c.validated_at is not None]
            if not validated or max(validated) > stale:
                continue
            try:
                async with asyncio.timeout(self.validator.settings.timeout * 2):
                    await self.validator.check_caa(authz.identifier.value, authz.wildcard,
                                                   acmeconfig.profile_settings(ctx.profile).caa_identities)
            except AcmeProblem as p:
                subproblems.append(Subproblem(p.type, p.detail, authz.identifier.as_json()))
            except TimeoutError:
                subproblems.append(Subproblem("dns", "the CAA lookup timed out",
                                              authz.identifier.as_json()))
        if subproblems:
            ctx.caa_problem = AcmeProblem(
                "caa", "CAA records forbid issuance for a name of this order (checked "
                "again: its validation is older than 8 hours)", 403, subproblems=subproblems)

    def _order_authorizations(self, ctx: Ctx) -> list[Authorization | None]:
        """The authorizations of the order ``ctx`` names, if it is this profile's (one
        thread hop for the order and all of them)."""
        order = self.storage.order(ctx.params.get("id", ""))
        if order is None or order.profile != ctx.profile_name:
            return []
        return [self.storage.authorization(a) for a in order.authz_ids]
