"""ACME resources over HTTP (RFC 8555 section 7): the transport and the routing.

A plain ASGI application: it matches the path to a resource, runs each POST as one unit
of work on a thread (its reads and writes one transaction, committed before the reply),
renders the reply or the problem, and adds the headers every ACME reply carries. The
resources themselves are in their own modules: directory and nonces, accounts, orders
and authorizations, challenges, finalize and certificates, revocation, renewal
information. Policy is the RA's: names are checked at newOrder and again at finalize by
the same functions every protocol uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from certwright.acme import config as acmeconfig
from certwright.acme import directory
from certwright.acme.accounts import Accounts
from certwright.acme.auth import Authenticator
from certwright.acme.challenges import Challenges
from certwright.acme.config import PROTOCOL
from certwright.acme.directory import Nonces
from certwright.acme.exchange import PROBLEM, Ctx, Handler, Reply, Threads, problem_reply
from certwright.acme.finalize import Finalization
from certwright.acme.orders import Orders
from certwright.acme.ports import AcmeCore, AcmeStorage
from certwright.acme.problems import AcmeProblem, from_error, not_found, server_internal
from certwright.acme.renewal import RenewalInfo
from certwright.acme.revocation import Revocation
from certwright.acme.validation import Validator
from certwright.asgi import AsgiEndpoint, read_body
from certwright.ca.profiles import Profile
from certwright.errors import CertwrightError

log = logging.getLogger("certwright.acme")

_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_GET = ("GET", "HEAD")
_POST = ("POST",)
_SEGMENT = r"(?P<{}>[^/]+)"
_PROFILE = "/acme/" + _SEGMENT.format("profile")
_ID = _SEGMENT.format("id")
Response = tuple[int, list[tuple[bytes, bytes]], bytes]


@dataclasses.dataclass(frozen=True)
class Resource:
    pattern: re.Pattern[str]
    handler: Handler
    methods: tuple[str, ...] = _POST
    default_profile: bool = False  # /acme/directory: the default profile's directory
    inline: bool = False  # no store, no I/O: not worth a thread hop
    nonce: bool = False  # a GET whose reply carries a nonce (newNonce)
    # Asynchronous work before the unit of work, outside its write lock (CAA lookups).
    before: Callable[[Ctx], Awaitable[None]] | None = None


def _resource(path: str, handler: Handler, methods: tuple[str, ...] = _POST, *,
              default_profile: bool = False, inline: bool = False, nonce: bool = False,
              before: Callable[[Ctx], Awaitable[None]] | None = None) -> Resource:
    return Resource(re.compile(f"^{path}$"), handler, methods, default_profile, inline, nonce,
                    before)


class AcmeServer:
    def __init__(self, core: AcmeCore, storage: AcmeStorage, validator: Validator) -> None:
        self.core = core
        self.storage = storage
        self.validator = validator
        self.threads = Threads()
        self.nonces = Nonces(storage, core.clock, acmeconfig.settings(core.config).nonce_lifetime)
        self._tasks: set[asyncio.Task[None]] = set()
        auth = Authenticator(storage, self.nonces)
        renewal = RenewalInfo(core)
        accounts = Accounts(core, storage, auth)
        orders = Orders(core, storage, auth, renewal)
        challenges = Challenges(core, storage, auth, validator, self.threads)
        finalization = Finalization(core, storage, auth)
        revocation = Revocation(core, auth)
        self._resources = [
            _resource("/acme/directory", directory.directory, _GET, default_profile=True, inline=True),
            _resource(_PROFILE + "/directory", directory.directory, _GET, inline=True),
            _resource(_PROFILE + "/new-nonce", directory.new_nonce, _GET, inline=True,
                      nonce=True),
            _resource(_PROFILE + "/new-account", accounts.new_account),
            _resource(_PROFILE + "/acct/" + _ID, accounts.account),
            _resource(_PROFILE + "/acct/" + _ID + "/orders", accounts.orders),
            _resource(_PROFILE + "/key-change", accounts.key_change),
            _resource(_PROFILE + "/new-order", orders.new_order),
            _resource(_PROFILE + "/order/" + _ID, orders.order),
            _resource(_PROFILE + "/order/" + _ID + "/finalize", finalization.finalize,
                      before=challenges.caa_recheck),
            _resource(_PROFILE + "/authz/" + _ID, orders.authorization),
            _resource(_PROFILE + "/chall/" + _ID, challenges.challenge),
            _resource(_PROFILE + "/cert/" + _SEGMENT.format("serial"), finalization.certificate),
            _resource(_PROFILE + "/revoke-cert", revocation.revoke),
            _resource(_PROFILE + "/renewal-info/(?P<certid>.*)", renewal.renewal_info,
                      _GET),
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
            await _send(send, self._render(reply, "", with_nonce=True))
            return
        res, params = found
        name = self.core.config.default_profile if res.default_profile else params.pop("profile")
        origin = _origin(scope)
        base = f"{origin}/acme/{name}"
        ctx: Ctx | None = None
        try:
            profile = self._acme_profile(name)
            if method not in res.methods:
                raise AcmeProblem("malformed", f"{method} is not allowed here; "
                                  f"use {' or '.join(res.methods)}", 405,
                                  headers={"Allow": ", ".join(res.methods)})
            body = await read_body(receive) if method == "POST" else b""
            query = scope.get("query_string", b"").decode("latin-1")
            url = f"{origin}{path}" + (f"?{query}" if query else "")
            content_type = ""
            for key, value in scope["headers"]:
                if key == b"content-type":
                    content_type = value.decode("latin-1").split(";")[0].strip()
                    break
            ctx = Ctx(name, profile, base, url, method, body, params, content_type)
            if res.before is not None:
                await res.before(ctx)
            if method == "POST":
                reply = await self.threads.run(self._in_unit, res.handler, ctx)
            elif res.inline:
                reply = res.handler(ctx)
            else:
                reply = await self.threads.run(res.handler, ctx)
        except AcmeProblem as problem:
            reply = problem_reply(problem)
        except CertwrightError as e:
            reply = problem_reply(from_error(e))
        except Exception:
            log.exception("ACME request %s %s failed", method, path)
            reply = problem_reply(server_internal())
        if reply.background is not None:
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
                reply.background())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # RFC 8555 6.5: a nonce in every reply to a POST, and (SHOULD) in error replies;
        # plain GETs (directory, renewalInfo) get none, so polling them writes nothing.
        wants_nonce = method == "POST" or res.nonce or reply.media_type == PROBLEM
        await _send(send, self._render(reply, base, ctx.reply_nonce if ctx else None,
                                       with_nonce=wants_nonce))

    def _match(self, path: str) -> tuple[Resource, dict[str, str]] | None:
        for res in self._resources:
            match = res.pattern.match(path)
            if match is not None:
                return res, match.groupdict()
        return None

    def _in_unit(self, handler: Handler, ctx: Ctx) -> Reply:
        """Run a POST handler as one unit of work: one store transaction, committed
        before the reply goes out. A problem the handler answers with is an answer, not a
        failure: what the request did before it (its nonce redeemed, an order moved on)
        is committed. Anything else rolls the whole request back."""
        answer: AcmeProblem | CertwrightError | None = None
        with self.core.unit():
            try:
                reply = handler(ctx)
            except (AcmeProblem, CertwrightError) as e:
                answer = e
        if answer is not None:
            raise answer
        return reply

    def _render(self, reply: Reply, base: str, nonce: str | None = None, *,
                with_nonce: bool = True) -> Response:
        headers = dict(reply.headers)
        if nonce is None and with_nonce:
            nonce = self.nonces.issue()  # from memory: no store write
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
        profile = self.core.config.profiles.get(name)
        if profile is None or PROTOCOL not in profile.protocols:
            raise not_found(f"no ACME directory for profile {name!r}")
        return profile


async def _send(send: Send, response: Response) -> None:
    status, headers, content = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


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
