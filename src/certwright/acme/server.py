"""ACME resources over HTTP (RFC 8555 section 7): a thin front-end.

Each handler checks the wire message (JWS, nonce, URL, account), makes its calls into
ACME state or the core (``CertificateAuthority.enroll``/``revoke``) and renders the
answer. Policy is the RA's: names are checked at newOrder and again at finalize by the
same functions every protocol uses.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from certwright.acme import jws
from certwright.acme.jws import Envelope
from certwright.acme.problems import AcmeProblem, Subproblem, from_error, malformed, not_found
from certwright.acme.state import Account, AcmeState, Authorization, Challenge, Identifier, Order
from certwright.acme.validation import Validator
from certwright.ca import policy
from certwright.ca.policy import EnrollmentRequest, Requester
from certwright.ca.profiles import Profile, Protocol
from certwright.ca.revocation import Reason
from certwright.ca.service import CertificateAuthority, Held, Issued
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki import csr as csrlib
from certwright.pki.names import Names, normalize_dns
from certwright.server.app import AsgiEndpoint, read_body
from certwright.store.repo import CertificateRecord

log = logging.getLogger("certwright.acme")

JSON = "application/json"
PROBLEM = "application/problem+json"
PEM_CHAIN = "application/pem-certificate-chain"
RETRY_AFTER_PROCESSING = "2"
# CA/B Forum Baseline Requirements 3.2.2.8: CAA is checked within 8 hours before issuance.
CAA_RECHECK_AFTER = dt.timedelta(hours=8)
HANDLER_THREADS = 32  # requests handled at once (each holds a thread while it runs)
ACCOUNT_KEY_CACHE = 4096  # imported account keys kept
T = TypeVar("T")
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# RFC 8555 7.6 / RFC 5280 5.3.1 reason codes a subscriber may give.
_REASONS = {0: Reason.unspecified, 1: Reason.key_compromise, 3: Reason.affiliation_changed,
            4: Reason.superseded, 5: Reason.cessation_of_operation,
            9: Reason.privilege_withdrawn}


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


@dataclasses.dataclass
class Ctx:
    """One request as the handlers see it."""

    profile_name: str
    profile: Profile
    base: str  # https://host:port/acme/<profile>
    url: str
    method: str
    body: bytes
    params: dict[str, str]
    content_type: str
    # The Replay-Nonce of the reply, when it was issued with the redemption of the
    # request's nonce (one transaction); otherwise the reply gets one of its own.
    reply_nonce: str | None = None
    # finalize: CAA of the order's names re-checked before the unit (see _caa_recheck).
    caa_problem: AcmeProblem | None = None


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes with media_type
    media_type: str = JSON
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    background: Callable[[], Coroutine[Any, Any, None]] | None = None


def problem_reply(p: AcmeProblem) -> Reply:
    return Reply(p.status, p.as_json(), PROBLEM, dict(p.headers))


class AcmeServer:
    def __init__(self, ca: CertificateAuthority, state: AcmeState, validator: Validator
                 ) -> None:
        self.ca = ca
        self.state = state
        self.validator = validator
        self.clock = ca.clock
        self.nonce_lifetime = ca.config.acme.nonce_lifetime
        self._tasks: set[asyncio.Task[None]] = set()
        # At most this many validations connect out at once (acme.max_concurrent_validations).
        self._validations = asyncio.Semaphore(ca.config.acme.max_concurrent_validations)
        ski = ca.chain[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self._issuer_key_id = ski.value.digest
        self._issuer_der = ca.chain[0].public_bytes(serialization.Encoding.DER)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._account_keys: dict[tuple[str, str], jws.AnyKey] = {}
        self._inline = {self.directory, self.new_nonce}
        self._routes = self._table()

    # -- routing ------------------------------------------------------------------------

    def _table(self) -> list[tuple[re.Pattern[str], Callable[[Ctx], Reply],
                                   tuple[str, ...], bool]]:
        get = ("GET", "HEAD")
        post = ("POST",)
        seg = r"(?P<{}>[^/]+)"
        p = "/acme/" + seg.format("profile")

        def r(path: str, handler: Callable[[Ctx], Reply], methods: tuple[str, ...] = post,
              default: bool = False) -> tuple[re.Pattern[str], Callable[[Ctx], Reply],
                                               tuple[str, ...], bool]:
            return re.compile(f"^{path}$"), handler, methods, default

        return [
            r("/acme/directory", self.directory, get, default=True),
            r(p + "/directory", self.directory, get),
            r(p + "/new-nonce", self.new_nonce, get),
            r(p + "/new-account", self.new_account),
            r(p + "/acct/" + seg.format("id"), self.account),
            r(p + "/acct/" + seg.format("id") + "/orders", self.orders),
            r(p + "/key-change", self.key_change),
            r(p + "/new-order", self.new_order),
            r(p + "/order/" + seg.format("id"), self.order),
            r(p + "/order/" + seg.format("id") + "/finalize", self.finalize),
            r(p + "/authz/" + seg.format("id"), self.authorization),
            r(p + "/chall/" + seg.format("id"), self.challenge),
            r(p + "/cert/" + seg.format("serial"), self.certificate),
            r(p + "/revoke-cert", self.revoke),
            r(p + "/renewal-info/(?P<certid>.*)", self.renewal_info, get),
        ]

    def routes(self) -> list[Route]:
        """The front-end for a Starlette application (tests). The server dispatches
        ``/acme/`` to ``asgi`` directly (``server/app.py``), without Starlette's
        middleware: it was a third of the cost of a request."""
        return [Route("/acme/{rest:path}", AsgiEndpoint(self.asgi), methods=_ANY_METHOD)]

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request under ``/acme/``, as a plain ASGI application."""
        method = scope["method"]
        path = scope["path"]
        found = self._match(path)
        if found is None:
            reply = problem_reply(not_found("no such ACME resource"))
            await self._send(send, await self._render(reply, "", with_nonce=True))
            return
        handler, methods, default, params = found
        name = self.ca.config.default_profile if default else params.pop("profile")
        origin = _origin(scope)
        base = f"{origin}/acme/{name}"
        ctx: Ctx | None = None
        try:
            profile = self._acme_profile(name)
            if method not in methods:
                raise AcmeProblem("malformed", f"{method} is not allowed here; "
                                  f"use {' or '.join(methods)}", 405,
                                  headers={"Allow": ", ".join(methods)})
            body = await read_body(receive) if method == "POST" else b""
            query = scope.get("query_string", b"").decode("latin-1")
            url = f"{origin}{path}" + (f"?{query}" if query else "")
            content_type = ""
            for key, value in scope["headers"]:
                if key == b"content-type":
                    content_type = value.decode("latin-1").split(";")[0].strip()
                    break
            ctx = Ctx(name, profile, base, url, method, body, params, content_type)
            if handler == self.finalize and profile.acme.check_caa:
                ctx.caa_problem = await self._caa_recheck(ctx)
            if method == "POST":
                reply = await self._in_thread(self._in_unit, handler, ctx)
            elif handler in self._inline:
                reply = handler(ctx)  # no store, no I/O: not worth a thread hop
            else:
                reply = await self._in_thread(handler, ctx)
        except AcmeProblem as problem:
            reply = problem_reply(problem)
        except CertwrightError as e:
            reply = problem_reply(from_error(e))
        except Exception:
            log.exception("ACME request %s %s failed", method, path)
            reply = problem_reply(AcmeProblem(
                "serverInternal", "the server could not process the request", 500))
        if reply.background is not None:
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
                reply.background())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # RFC 8555 6.5: a nonce in every reply to a POST, and (SHOULD) in error replies;
        # plain GETs (directory, renewalInfo) get none, so polling them writes nothing.
        wants_nonce = (method == "POST" or handler == self.new_nonce
                       or reply.media_type == PROBLEM)
        await self._send(send, await self._render(
            reply, base, ctx.reply_nonce if ctx else None, with_nonce=wants_nonce))

    def _match(self, path: str) -> tuple[Callable[[Ctx], Reply], tuple[str, ...], bool,
                                         dict[str, str]] | None:
        for pattern, handler, methods, default in self._routes:
            match = pattern.match(path)
            if match is not None:
                return handler, methods, default, match.groupdict()
        return None

    @staticmethod
    async def _send(send: Send, response: tuple[int, list[tuple[bytes, bytes]], bytes]
                    ) -> None:
        status, headers, content = response
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (the store) on this server's threads. A plain executor:
        anyio's to_thread costs about twice as much per call. Made on first use, so that
        a worker process forked after start-up has threads of its own."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=HANDLER_THREADS, thread_name_prefix="acme")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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

    def _in_unit(self, handler: Callable[[Ctx], Reply], ctx: Ctx) -> Reply:
        """Run a POST handler as one unit of work: one store transaction, committed
        before the reply goes out. A problem the handler answers with is an answer, not a
        failure: what the request did before it (its nonce redeemed, an order moved on)
        is committed. Anything else rolls the whole request back."""
        answer: AcmeProblem | CertwrightError | None = None
        with self.state.store.unit():
            try:
                reply = handler(ctx)
            except (AcmeProblem, CertwrightError) as e:
                answer = e
        if answer is not None:
            raise answer
        return reply

    async def _render(self, reply: Reply, base: str, nonce: str | None = None, *,
                      with_nonce: bool = True) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = dict(reply.headers)
        if nonce is None and with_nonce:
            nonce = self.state.new_nonce(self.nonce_lifetime)  # from memory: no store write
        if nonce is not None:
            headers["Replay-Nonce"] = nonce
        headers["Cache-Control"] = "no-store"
        if base:
            link = f'<{base}/directory>;rel="index"'
            headers["Link"] = f"{headers['Link']}, {link}" if "Link" in headers else link
        if reply.body is None:
            content = b""
        elif isinstance(reply.body, bytes):
            content = reply.body
        else:
            content = json.dumps(reply.body, indent=2).encode()
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if content:
            raw.append((b"content-type", reply.media_type.encode("latin-1")))
        if reply.status not in (204, 304):
            raw.append((b"content-length", str(len(content)).encode()))
        return reply.status, raw, content

    def _acme_profile(self, name: str) -> Profile:
        profile = self.ca.config.profiles.get(name)
        if profile is None or Protocol.ACME not in profile.protocols:
            raise not_found(f"no ACME directory for profile {name!r}")
        return profile

    # -- request authentication (RFC 8555 6.2-6.5) --------------------------------------

    def _authenticate(self, ctx: Ctx, *, allow_jwk: bool = False,
                      require_account: bool = True) -> tuple[Envelope, Account | None,
                                                              jws.AnyKey]:
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
            account = (self.state.account(path[len(prefix):])
                       if path.startswith(prefix) and "/" not in path[len(prefix):] else None)
            if account is None or account.profile != ctx.profile_name:
                raise AcmeProblem("accountDoesNotExist", "no account with that kid", 400)
            if account.status != "valid":
                raise _not_valid(account)
            key = self._account_key(account)
        jws.verify(env, key)
        redeemed, ctx.reply_nonce = self.state.redeem_and_issue_nonce(env.nonce or "",
                                                                      self.nonce_lifetime)
        if not redeemed:
            raise AcmeProblem("badNonce", "the nonce is unknown, used or expired", 400)
        if require_account and account is None and not allow_jwk:
            raise AcmeProblem("accountDoesNotExist", "no account", 400)
        return env, account, key

    def _post_as_get(self, ctx: Ctx) -> Account:
        env, account, _ = self._authenticate(ctx)
        if env.payload != b"":
            raise malformed("this resource is fetched with POST-as-GET (an empty payload)")
        assert account is not None
        return account

    # -- rendering ----------------------------------------------------------------------

    def _account_json(self, ctx: Ctx, a: Account) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": a.status, "contact": list(a.contact),
                               "orders": f"{ctx.base}/acct/{a.id}/orders",
                               "createdAt": rfc3339(a.created_at)}
        if a.tos_agreed:
            doc["termsOfServiceAgreed"] = True
        return doc

    def _order_json(self, ctx: Ctx, o: Order) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": o.status,
            "expires": rfc3339(o.expires_at),
            "identifiers": [i.as_json() for i in o.identifiers],
            "authorizations": [f"{ctx.base}/authz/{a}" for a in o.authz_ids],
            "finalize": f"{ctx.base}/order/{o.id}/finalize",
        }
        if o.not_before:
            doc["notBefore"] = rfc3339(o.not_before)
        if o.not_after:
            doc["notAfter"] = rfc3339(o.not_after)
        if o.error:
            doc["error"] = o.error
        if o.serial:
            doc["certificate"] = f"{ctx.base}/cert/{o.serial}"
        if o.replaces:
            doc["replaces"] = o.replaces
        return doc

    def _challenge_json(self, ctx: Ctx, c: Challenge) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": c.type, "url": f"{ctx.base}/chall/{c.id}",
                               "status": c.status, "token": c.token}
        if c.validated_at and c.status == "valid":
            doc["validated"] = rfc3339(c.validated_at)
        if c.error:
            doc["error"] = c.error
        return doc

    def _authz_json(self, ctx: Ctx, a: Authorization) -> dict[str, Any]:
        status = a.status
        if status in ("pending", "valid") and a.expires_at <= self.clock.now():
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
            "challenges": [self._challenge_json(ctx, c) for c in a.challenges
                           if status == "pending" or c.status != "pending"],
        }
        if a.wildcard:
            doc["wildcard"] = True
        return doc

    # -- directory and nonces -----------------------------------------------------------

    def directory(self, ctx: Ctx) -> Reply:
        acme = ctx.profile.acme
        meta: dict[str, Any] = {"externalAccountRequired": acme.eab_required,
                                "caaIdentities": list(acme.caa_identities)}
        if acme.terms_of_service:
            meta["termsOfService"] = acme.terms_of_service
        if acme.website:
            meta["website"] = acme.website
        return Reply(body={
            "newNonce": f"{ctx.base}/new-nonce",
            "newAccount": f"{ctx.base}/new-account",
            "newOrder": f"{ctx.base}/new-order",
            "revokeCert": f"{ctx.base}/revoke-cert",
            "keyChange": f"{ctx.base}/key-change",
            "renewalInfo": f"{ctx.base}/renewal-info",
            "meta": meta,
        })

    def new_nonce(self, ctx: Ctx) -> Reply:
        # RFC 8555 7.2: 200 for HEAD, 204 for GET.
        return Reply(200 if ctx.method == "HEAD" else 204)

    # -- accounts (RFC 8555 7.3) --------------------------------------------------------

    def new_account(self, ctx: Ctx) -> Reply:
        env, _, _ = self._authenticate(ctx, allow_jwk=True, require_account=False)
        if env.jwk is None:
            raise malformed("newAccount must be signed with a jwk, not a kid")
        payload = env.json_payload()
        jwk = jws.public_jwk(env.jwk)
        thumb = jws.key_thumbprint(env.jwk)
        existing = self.state.account_by_key(ctx.profile_name, thumb)
        if existing is not None and existing.status != "valid":
            raise _not_valid(existing)
        if existing is not None:
            return Reply(200, self._account_json(ctx, existing),
                         headers={"Location": f"{ctx.base}/acct/{existing.id}"})
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key", 400)
        acme = ctx.profile.acme
        contact = self._contacts(payload.get("contact", []))
        agreed = payload.get("termsOfServiceAgreed") is True
        if acme.terms_of_service and not agreed:
            raise AcmeProblem("userActionRequired",
                              "you must agree to the terms of service", 403,
                              headers={"Link": f'<{acme.terms_of_service}>;rel="terms-of-service"'})
        eab_kid = None
        if "externalAccountBinding" in payload:
            eab_kid = self._check_eab(ctx, payload["externalAccountBinding"], jwk)
        elif acme.eab_required:
            raise AcmeProblem("externalAccountRequired",
                              "this directory requires an external account binding", 400)
        from certwright.acme.state import EabAlreadyUsed

        try:
            account, created = self.state.create_account(
                profile=ctx.profile_name, thumbprint=thumb, jwk=jwk, contact=contact,
                tos_agreed=agreed, eab_kid=eab_kid)
        except EabAlreadyUsed:
            raise AcmeProblem("unauthorized", "this external account binding key is already "
                                              "bound to an account", 403) from None
        if created:
            self.ca.store.audit("acme.account.created", actor=f"acme-account:{account.id}",
                                subject=account.id, at=self.clock.now(),
                                data={"profile": ctx.profile_name, "thumbprint": thumb,
                                      "contact": contact, "eab_kid": eab_kid})
        return Reply(201 if created else 200, self._account_json(ctx, account),
                     headers={"Location": f"{ctx.base}/acct/{account.id}"})

    @staticmethod
    def _contacts(value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise malformed("contact must be a list of URLs")
        if len(value) > 10:
            raise malformed("at most 10 contacts")
        for c in value:
            # RFC 8555 7.3: servers MUST support mailto; we support only mailto.
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
        return list(value)

    def _check_eab(self, ctx: Ctx, obj: Any, account_jwk: dict[str, Any]) -> str:
        if not isinstance(obj, dict) or not isinstance(obj.get("protected"), str):
            raise malformed("externalAccountBinding is not a flattened JWS")
        try:
            protected = json.loads(jws.b64decode(obj["protected"], "EAB protected header"))
        except ValueError:
            raise malformed("externalAccountBinding protected header is not JSON") from None
        kid = protected.get("kid") if isinstance(protected, dict) else None
        found = self.state.eab(kid) if isinstance(kid, str) else None
        if found is None:
            raise AcmeProblem("unauthorized", "unknown external account binding key id", 403)
        profile, hmac_key, expires_at, bound = found
        if profile != ctx.profile_name:
            raise AcmeProblem("unauthorized", "this EAB key belongs to another profile", 403)
        if expires_at is not None and expires_at <= self.clock.now():
            raise AcmeProblem("unauthorized", "this EAB key has expired", 403)
        if bound is not None:
            raise AcmeProblem("unauthorized", "this external account binding key is already "
                                              "bound to an account", 403)
        env = jws.verify_hmac(obj, jws.b64decode(hmac_key, "EAB key"))
        if env.protected.get("url") != f"{ctx.base}/new-account":
            raise AcmeProblem("unauthorized", "the EAB url must be the newAccount URL", 403)
        try:
            inner = json.loads(env.payload)
        except ValueError:
            raise malformed("the EAB payload is not a JWK") from None
        if not isinstance(inner, dict) or jws.public_jwk(inner) != account_jwk:
            raise AcmeProblem("unauthorized", "the EAB payload is not the account key", 403)
        return kid  # type: ignore[return-value]

    def account(self, ctx: Ctx) -> Reply:
        env, account, _ = self._authenticate(ctx)
        assert account is not None
        if account.id != ctx.params["id"]:
            raise AcmeProblem("unauthorized", "the kid does not match this account", 403)
        if env.payload == b"":
            return Reply(200, self._account_json(ctx, account))
        payload = env.json_payload()
        if payload.get("status") == "deactivated":
            account = self.state.deactivate_account(account.id)
            self.ca.store.audit("acme.account.deactivated", actor=f"acme-account:{account.id}",
                                subject=account.id, at=self.clock.now(), data={})
        elif "status" in payload and payload["status"] != account.status:
            raise malformed("the only status a client may set is deactivated")
        if "contact" in payload:
            account = self.state.update_account(account.id,
                                                contact=self._contacts(payload["contact"]))
        return Reply(200, self._account_json(ctx, account))

    def orders(self, ctx: Ctx) -> Reply:
        account = self._post_as_get(ctx)
        if account.id != ctx.params["id"]:
            raise AcmeProblem("unauthorized", "these are another account's orders", 403)
        return Reply(200, {"orders": [f"{ctx.base}/order/{o.id}"
                                      for o in self.state.orders_of(account.id)]})

    def key_change(self, ctx: Ctx) -> Reply:
        """RFC 8555 7.3.5, with each of its checks."""
        env, account, _ = self._authenticate(ctx)
        assert account is not None
        try:
            inner_obj = json.loads(env.payload)
        except ValueError:
            raise malformed("the keyChange payload is not a JWS") from None
        inner = jws.parse(inner_obj, inner=True)
        if inner.jwk is None:
            raise malformed("the inner JWS must carry the new key as jwk")
        new_key = jws.import_key(inner.jwk)
        jws.verify(inner, new_key)
        if inner.url != env.url:
            raise malformed("the inner JWS url differs from the outer one")
        payload = inner.json_payload()
        if payload.get("account") != env.kid:
            raise malformed("the inner payload's account is not the outer kid")
        old = payload.get("oldKey")
        if not isinstance(old, dict) or jws.key_thumbprint(old) != account.thumbprint:
            raise malformed("oldKey is not the account's current key")
        new_thumb = jws.key_thumbprint(inner.jwk)
        if new_thumb == account.thumbprint:
            raise malformed("the new key is the current key")
        other = self.state.account_by_key(ctx.profile_name, new_thumb)
        if other is not None:
            raise AcmeProblem("malformed", "the new key belongs to another account", 409,
                              headers={"Location": f"{ctx.base}/acct/{other.id}"})
        import sqlalchemy as sa

        try:
            updated = self.state.update_account(account.id, jwk=jws.public_jwk(inner.jwk),
                                                thumbprint=new_thumb)
        except sa.exc.IntegrityError:
            raise AcmeProblem("malformed", "the new key belongs to another account", 409
                              ) from None
        self.ca.store.audit("acme.account.key_changed", actor=f"acme-account:{account.id}",
                            subject=account.id, at=self.clock.now(),
                            data={"old": account.thumbprint, "new": new_thumb})
        return Reply(200, self._account_json(ctx, updated))

    # -- orders (RFC 8555 7.4) ----------------------------------------------------------

    def _identifiers(self, ctx: Ctx, value: Any) -> list[tuple[Identifier, bool]]:
        if not isinstance(value, list) or not value:
            raise malformed("identifiers must be a non-empty list")
        if len(value) > ctx.profile.names.max_names:
            raise AcmeProblem("rejectedIdentifier",
                              f"at most {ctx.profile.names.max_names} identifiers per order")
        out: dict[Identifier, bool] = {}
        problems: list[Subproblem] = []
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                raise malformed("each identifier is an object with type and value")
            kind, raw = item.get("type"), item["value"]
            try:
                if kind == "dns":
                    ident = Identifier("dns", normalize_dns(raw))
                    names = Names(dns=(ident.value,))
                elif kind == "ip":
                    addr = ipaddress.ip_address(raw)
                    ident = Identifier("ip", str(addr))
                    names = Names(ip=(addr,))
                else:
                    problems.append(Subproblem("unsupportedIdentifier",
                                               f"identifier type {kind!r} is not supported",
                                               {"type": str(kind), "value": raw}))
                    continue
                policy.check_names(ctx.profile, names)
            except ValueError:
                problems.append(Subproblem("malformed", f"{raw!r} is not an IP address",
                                           {"type": str(kind), "value": raw}))
                continue
            except CertwrightError as e:
                problems.append(Subproblem("rejectedIdentifier", str(e),
                                           {"type": str(kind), "value": raw}))
                continue
            out[ident] = ident.value.startswith("*.")
        if problems:
            raise AcmeProblem(problems[0].type if len(problems) == 1 else "rejectedIdentifier",
                              "; ".join(p.detail for p in problems), 400,
                              subproblems=problems)
        return list(out.items())

    def _challenge_types(self, ctx: Ctx, ident: Identifier, wildcard: bool) -> list[str]:
        allowed = ctx.profile.acme.challenges
        if wildcard:
            types = ["dns-01"]  # RFC 8555 7.1.3: wildcards only through dns-01
        elif ident.type == "ip":
            types = ["http-01", "tls-alpn-01"]  # RFC 8738 7: no dns-01 for IP addresses
        else:
            types = ["http-01", "dns-01", "tls-alpn-01"]
        types = [t for t in types if t in allowed]
        if not types:
            raise AcmeProblem("rejectedIdentifier",
                              f"no challenge type this profile offers can prove {ident.value}",
                              subproblems=[Subproblem("rejectedIdentifier",
                                                      "no usable challenge type",
                                                      ident.as_json())])
        return types

    def _rate_limit(self, ctx: Ctx, account: Account) -> None:
        limits = ctx.profile.acme.rate_limits
        now = self.clock.now()
        since = now - limits.window
        for scope, kwargs, limit in (
            ("account", {"account_id": account.id}, limits.orders_per_account),
            ("profile", {"profile": ctx.profile_name}, limits.orders_per_profile),
        ):
            if self.state.count_orders(since=since, **kwargs) >= limit:
                oldest = self.state.oldest_order_since(since=since, **kwargs)
                wait = max(1, int(((oldest or now) + limits.window - now).total_seconds()) + 1)
                raise AcmeProblem("rateLimited",
                                  f"too many new orders for this {scope}: {limit} per "
                                  f"{int(limits.window.total_seconds())} s",
                                  429, headers={"Retry-After": str(wait)})
        if self.state.count_pending_authorizations(account.id) >= \
                limits.pending_authorizations_per_account:
            raise AcmeProblem("rateLimited", "too many pending authorizations for this "
                              "account; complete or deactivate some first", 429,
                              headers={"Retry-After": "60"})

    def new_order(self, ctx: Ctx) -> Reply:
        env, account, _ = self._authenticate(ctx)
        assert account is not None
        payload = env.json_payload()
        identifiers = self._identifiers(ctx, payload.get("identifiers"))
        not_before = (parse_rfc3339(payload["notBefore"], "notBefore")
                      if payload.get("notBefore") is not None else None)
        not_after = (parse_rfc3339(payload["notAfter"], "notAfter")
                     if payload.get("notAfter") is not None else None)
        try:
            policy.validity_window(ctx.profile, not_before, not_after, self.clock.now())
        except CertwrightError as e:
            raise malformed(str(e)) from None
        types = {i: self._challenge_types(ctx, i, w) for i, w in identifiers}
        replaces = payload.get("replaces")
        if replaces is not None:
            self._check_replaces(account, replaces, identifiers)
        self._rate_limit(ctx, account)
        acme = ctx.profile.acme
        from certwright.acme.state import AlreadyReplaced

        try:
            order = self.state.create_order(
                account_id=account.id, profile=ctx.profile_name, identifiers=identifiers,
                challenge_types=types, not_before=not_before, not_after=not_after,
                order_lifetime=acme.order_lifetime,
                authz_lifetime=acme.pending_authorization_lifetime, replaces=replaces)
        except AlreadyReplaced:
            raise AcmeProblem("alreadyReplaced", "another order already replaces that "
                              "certificate", 409) from None
        order = self.state.refresh_order(order)
        return Reply(201, self._order_json(ctx, order),
                     headers={"Location": f"{ctx.base}/order/{order.id}"})

    def _certificate_by_certid(self, certid: str) -> CertificateRecord | None:
        """The certificate an RFC 9773 certID names, if this CA issued it."""
        aki_part, dot, serial_part = certid.partition(".")
        if not dot:
            raise malformed("a certID is base64url(AKI keyIdentifier).base64url(serial)")
        aki = jws.b64decode(aki_part, "certID key identifier")
        serial_bytes = jws.b64decode(serial_part, "certID serial")
        if aki != self._issuer_key_id or not serial_bytes:
            return None
        return self.ca.store.find_certificate(format(int.from_bytes(serial_bytes, "big"), "x"))

    def _check_replaces(self, account: Account, certid: Any,
                        identifiers: list[tuple[Identifier, bool]]) -> None:
        """RFC 9773 5: the replaced certificate is the account's and shares a name."""
        if not isinstance(certid, str):
            raise malformed("replaces must be a certID string")
        record = self._certificate_by_certid(certid)
        if record is None or record.requester != f"acme-account:{account.id}":
            raise malformed("replaces names no certificate this account holds")
        wanted = {f"{i.type}:{i.value}" for i, _ in identifiers}
        if not wanted & set(record.names):
            raise malformed("the replaced certificate shares no identifier with this order")

    def _owned_order(self, ctx: Ctx, account: Account) -> Order:
        order = self.state.order(ctx.params["id"])
        if order is None or order.account_id != account.id or order.profile != ctx.profile_name:
            raise not_found("no such order")
        return order

    def _advance(self, order: Order) -> Order:
        """Bring an order up to date: authorizations, or a held request an operator decided."""
        order = self.state.refresh_order(order)
        if order.status == "processing" and order.request_id:
            req = self.ca.store.request(order.request_id)
            if req.state == "issued" and req.serial:
                order = self.state.end_finalize(order.id, serial=req.serial)
            elif req.state == "rejected":
                order = self.state.end_finalize(order.id, error={
                    "type": "urn:ietf:params:acme:error:unauthorized",
                    "detail": f"an operator rejected the request: {req.reason}",
                    "status": 403})
        return order

    def order(self, ctx: Ctx) -> Reply:
        account = self._post_as_get(ctx)
        order = self._advance(self._owned_order(ctx, account))
        headers = {"Retry-After": RETRY_AFTER_PROCESSING} if order.status == "processing" else {}
        return Reply(200, self._order_json(ctx, order), headers=headers)

    async def _caa_recheck(self, ctx: Ctx) -> AcmeProblem | None:
        """CAA again for names whose authorization was validated more than
        CAA_RECHECK_AFTER ago (CA/B Forum BR 3.2.2.8: CAA is checked within 8 hours
        before issuance; a reused authorization can be 30 days old).

        Done before the request's store transaction, which holds the write lock, so that
        DNS lookups never hold it. The result is revealed only after the handler has
        authenticated the request and found the order to be the requester's."""
        authzs = await self._in_thread(self._order_authorizations, ctx)
        stale = self.clock.now() - CAA_RECHECK_AFTER
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
                                                   ctx.profile.acme.caa_identities)
            except AcmeProblem as p:
                subproblems.append(Subproblem(p.type, p.detail, authz.identifier.as_json()))
            except TimeoutError:
                subproblems.append(Subproblem("dns", "the CAA lookup timed out",
                                              authz.identifier.as_json()))
        if not subproblems:
            return None
        return AcmeProblem("caa", "CAA records forbid issuance for a name of this order "
                           "(checked again: its validation is older than 8 hours)",
                           403, subproblems=subproblems)

    def _order_authorizations(self, ctx: Ctx) -> list[Authorization | None]:
        """The authorizations of the order ``ctx`` names, if it is this profile's."""
        order = self.state.order(ctx.params.get("id", ""))
        if order is None or order.profile != ctx.profile_name:
            return []
        return [self.state.authorization(a) for a in order.authz_ids]

    def finalize(self, ctx: Ctx) -> Reply:
        env, account, key = self._authenticate(ctx)
        assert account is not None
        order = self._advance(self._owned_order(ctx, account))
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready", 403)
        if ctx.caa_problem is not None:
            # The order stays ready: the domain owner may change the records and the
            # client finalize again.
            raise ctx.caa_problem
        payload = env.json_payload()
        try:
            csr = csrlib.load(jws.b64decode(payload.get("csr", ""), "csr"))
        except CertwrightError as e:
            raise AcmeProblem("badCSR", e.detail) from None
        self._check_csr(order, csr, key)
        try:
            # The RA checks the key again at enroll; checked here too, an unacceptable
            # key is a badCSR the client can correct while the order stays ready.
            policy.check_key(ctx.profile, csr.public_key())
        except CertwrightError as e:
            raise AcmeProblem("badCSR", str(e)) from None
        if not self.state.begin_finalize(order.id):
            raise AcmeProblem("orderNotReady", "the order is already being finalized", 403)
        request = EnrollmentRequest(profile=order.profile, csr=csr,
                                    requester=Requester("acme-account", account.id),
                                    protocol=Protocol.ACME, not_before=order.not_before,
                                    not_after=order.not_after)
        try:
            outcome = self.ca.enroll(request)
        except CertwrightError as e:
            problem = from_error(e, csr_stage=True)
            self.state.end_finalize(order.id, error=problem.as_json())
            raise problem from None
        except Exception:
            problem = AcmeProblem("serverInternal", "issuance failed", 500)
            self.state.end_finalize(order.id, error=problem.as_json())
            raise
        if isinstance(outcome, Issued):
            order = self.state.end_finalize(order.id, serial=outcome.record.serial)
        else:
            assert isinstance(outcome, Held)
            order = self.state.end_finalize(order.id, request_id=outcome.request_id)
        headers = {"Location": f"{ctx.base}/order/{order.id}"}
        if order.status == "processing":
            headers["Retry-After"] = RETRY_AFTER_PROCESSING
        return Reply(200, self._order_json(ctx, order), headers=headers)

    @staticmethod
    def _check_csr(order: Order, csr: x509.CertificateSigningRequest, key: jws.AnyKey
                   ) -> None:
        try:
            names = csrlib.requested_names(csr)
        except CertwrightError as e:
            raise AcmeProblem("badCSR", e.detail) from None
        cn = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        requested = {("dns", n) for n in names.dns} | {("ip", str(a)) for a in names.ip}
        if names.uri or names.email:
            raise AcmeProblem("badCSR", "the CSR may name only the order's DNS names and IPs")
        if cn:
            value = str(cn[0].value).lower().rstrip(".")
            try:
                requested.add(("ip", str(ipaddress.ip_address(value))))
            except ValueError:
                requested.add(("dns", value))
        wanted = {(i.type, i.value) for i in order.identifiers}
        # RFC 8555 7.4: "The CSR MUST indicate the exact same set of requested identifiers
        # as the initial newOrder request."
        if requested != wanted:
            missing = sorted(v for _, v in wanted - requested)
            extra = sorted(v for _, v in requested - wanted)
            raise AcmeProblem("badCSR", "the CSR's names differ from the order's identifiers"
                              + (f"; missing: {', '.join(missing)}" if missing else "")
                              + (f"; not in the order: {', '.join(extra)}" if extra else ""))
        spki = jws.spki_der(key)
        csr_spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        if spki == csr_spki:
            raise AcmeProblem("badCSR", "the certificate key must not be the account key")

    # -- authorizations and challenges (RFC 8555 7.5) -----------------------------------

    def _owned_authz(self, ctx: Ctx, account: Account, authz_id: str) -> Authorization:
        authz = self.state.authorization(authz_id)
        if authz is None or authz.account_id != account.id or authz.profile != ctx.profile_name:
            raise not_found("no such authorization")
        return authz

    def authorization(self, ctx: Ctx) -> Reply:
        env, account, _ = self._authenticate(ctx)
        assert account is not None
        authz = self._owned_authz(ctx, account, ctx.params["id"])
        if env.payload != b"":
            payload = env.json_payload()
            if payload.get("status") != "deactivated":
                raise malformed("the only status a client may set is deactivated")
            self.state.deactivate_authorization(authz.id)
            authz = self._owned_authz(ctx, account, authz.id)
        return Reply(200, self._authz_json(ctx, authz))

    def challenge(self, ctx: Ctx) -> Reply:
        env, account, _ = self._authenticate(ctx)
        assert account is not None
        chal = self.state.challenge(ctx.params["id"])
        if chal is None:
            raise not_found("no such challenge")
        authz = self._owned_authz(ctx, account, chal.authz_id)
        background = None
        if env.payload != b"":
            env.json_payload()  # RFC 8555 7.5.1: the client sends {} to ask for validation
            if chal.status == "pending" and self.state.start_challenge(chal):
                background = self._validate_later(ctx, account, authz, chal)
            chal = self.state.challenge(chal.id) or chal
        headers = {"Link": f'<{ctx.base}/authz/{authz.id}>;rel="up"'}
        if chal.status == "processing":
            headers["Retry-After"] = "1"
        return Reply(200, self._challenge_json(ctx, chal), headers=headers,
                     background=background)

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
                    if profile.acme.check_caa and ident.type == "dns":
                        await self.validator.check_caa(ident.value, authz.wildcard,
                                                       profile.acme.caa_identities)
                    nets = profile.acme.validation_networks
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
            await self._in_thread(self._record_validation, account, authz, chal, error)

        return run

    def _record_validation(self, account: Account, authz: Authorization, chal: Challenge,
                           error: dict[str, Any] | None) -> None:
        profile = self.ca.config.profiles.get(authz.profile)
        valid_for = (profile.acme.authorization_lifetime if profile is not None
                     else dt.timedelta(days=1))
        with self.state.store.unit():  # the result and its audit record: one commit
            self._record_validation_steps(account, authz, chal, error, valid_for)

    def _record_validation_steps(self, account: Account, authz: Authorization,
                                 chal: Challenge, error: dict[str, Any] | None,
                                 valid_for: dt.timedelta) -> None:
        self.state.finish_challenge(chal, error, valid_for)
        self.ca.store.audit(
            "acme.challenge.validated" if error is None else "acme.challenge.failed",
            actor=f"acme-account:{account.id}", subject=authz.identifier.value,
            at=self.clock.now(),
            data={"type": chal.type, "identifier": authz.identifier.as_json(),
                  "authorization": authz.id, "error": error})

    # -- certificates (RFC 8555 7.4.2, 7.6) ---------------------------------------------

    def certificate(self, ctx: Ctx) -> Reply:
        account = self._post_as_get(ctx)
        record = self.ca.store.find_certificate(ctx.params["serial"])
        if record is None or record.requester != f"acme-account:{account.id}":
            raise not_found("no such certificate")
        cert = x509.load_der_x509_certificate(record.der)
        pem = cert.public_bytes(serialization.Encoding.PEM) + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.ca.chain)
        up = f"{self.ca.config.server.http_url}/ca/{self.ca.authority.issuer_id}.der"
        return Reply(200, pem, PEM_CHAIN, headers={"Link": f'<{up}>;rel="up"'})

    def revoke(self, ctx: Ctx) -> Reply:
        env, account, key = self._authenticate(ctx, allow_jwk=True, require_account=False)
        payload = env.json_payload()
        try:
            der = jws.b64decode(payload.get("certificate", ""), "certificate")
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, TypeError):
            raise malformed("certificate is not a DER certificate") from None
        record = self.ca.store.find_certificate(format(cert.serial_number, "x"))
        if record is None or record.der != der:
            raise not_found("this CA did not issue that certificate")
        reason_code = payload.get("reason", 0)
        if (not isinstance(reason_code, int) or isinstance(reason_code, bool)
                or reason_code not in _REASONS):
            raise AcmeProblem("badRevocationReason",
                              f"reason {reason_code!r} is not allowed; use one of "
                              f"{sorted(_REASONS)}")
        if account is not None:
            if record.requester != f"acme-account:{account.id}":
                raise AcmeProblem("unauthorized", "this account did not order that "
                                  "certificate", 403)
            actor = f"acme-account:{account.id}"
        else:
            spki = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            if jws.spki_der(key) != spki:
                raise AcmeProblem("unauthorized", "the jwk is not the certificate's key", 403)
            actor = "acme-certificate-key"
        if record.revoked:
            raise AcmeProblem("alreadyRevoked", "the certificate is already revoked")
        try:
            self.ca.revoke(record.serial, _REASONS[reason_code], actor)
        except CertwrightError as e:
            if e.kind is ErrorKind.CONFLICT:
                raise AcmeProblem("alreadyRevoked", "the certificate is already revoked"
                                  ) from None
            raise
        return Reply(200)

    # -- renewal information (RFC 9773) -------------------------------------------------

    def renewal_info(self, ctx: Ctx) -> Reply:
        record = self._certificate_by_certid(ctx.params["certid"])
        if record is None:
            raise not_found("no certificate from this CA with that certID")
        now = self.clock.now()
        if record.revoked:
            # A revoked certificate should be replaced at once.
            start, end = now - dt.timedelta(hours=1), now
        else:
            acme = self.ca.config.profiles[record.profile].acme \
                if record.profile in self.ca.config.profiles else ctx.profile.acme
            life = record.not_after - record.not_before
            start = record.not_before + life * acme.renewal_window_start
            end = record.not_before + life * acme.renewal_window_end
            # Whole seconds on the wire, rounded outward so a short lifetime cannot
            # collapse the window. RFC 9773 4.2: "A RenewalInfo object in which the end
            # timestamp equals or precedes the start timestamp is invalid. Servers MUST
            # NOT serve such a response".
            start = start.replace(microsecond=0)
            if end.microsecond:
                end = end.replace(microsecond=0) + dt.timedelta(seconds=1)
        return Reply(200, {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}},
                     headers={"Retry-After": "21600"})


def _not_valid(account: Account) -> AcmeProblem:
    # RFC 8555 7.3.6: "If a server receives a POST or POST-as-GET from a deactivated
    # account, it MUST return an error response with status code 401 (Unauthorized)".
    return AcmeProblem("unauthorized", f"the account is {account.status}", 401)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def _origin(scope: Scope) -> str:
    """scheme://host[:port] of the request as the client addressed it (its Host header),
    or the listening address when the header is missing or not a host[:port]."""
    scheme = scope.get("scheme", "https")
    for key, value in scope["headers"]:
        if key == b"host":
            host = value.decode("latin-1")
            if _AUTHORITY.match(host):
                return f"{scheme}://{host}"
            break
    server = scope.get("server")
    if not server:
        return f"{scheme}://localhost"
    host, port = server
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


