"""EST (RFC 7030) over HTTPS: a thin front-end.

Paths: /.well-known/est/<operation> and /.well-known/est/<label>/<operation> (RFC 7030
3.2.2). cacerts and csrattrs are answered here (without a label they describe
``default_profile``); the enrollment operations are authenticated (``est/auth.py``) and
handed to the core (``est/enroll.py``) on this server's threads. Every status is decided
by ``est/base.py``: never internal detail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

from cryptography import x509
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from certwright.asgi import AsgiEndpoint, read_body
from certwright.errors import CertwrightError
from certwright.est import wire
from certwright.est.auth import Authenticator
from certwright.est.base import (
    GETS,
    POSTS,
    PREFIX,
    Ctx,
    EstError,
    Labels,
    Reply,
    log,
    render_error,
    text,
)
from certwright.est.enroll import Enrollment
from certwright.est.ports import Core

__all__ = ["EstServer"]

_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
HANDLER_THREADS = 32  # requests handled at once (each holds a thread while it runs)


class EstServer:
    def __init__(self, core: Core, anchors: dict[str, tuple[x509.Certificate, ...]]) -> None:
        self.core = core
        self.labels = Labels(core.config)
        self.auth = Authenticator(core, self.labels, anchors)
        self.enrollment = Enrollment(core, self.labels, self.auth)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # RFC 7030 4.1.3: the current root and the chain; the same for every label.
        self.cacerts = wire.certs_only([*core.chain, core.root])
        self.csrattrs = {name: wire.b64_lines(wire.csr_attributes(core.config.profiles[name]))
                         for name in self.labels.profiles.values()}

    def routes(self) -> list[Route]:
        """The front-end for a Starlette application (tests). The server dispatches
        ``/.well-known/est/`` to ``asgi`` directly (``server/app.py`` PrefixDispatch)."""
        return [Route(PREFIX + "/{rest:path}", AsgiEndpoint(self.asgi), methods=_METHODS)]

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request under ``/.well-known/est/``, as a plain ASGI application."""
        status, headers, body = await self._answer(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive
                      ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        method = scope["method"]
        path = scope["path"]
        parts = path[len(PREFIX) + 1:].split("/") if path.startswith(PREFIX + "/") else []
        op = parts[-1] if 1 <= len(parts) <= 2 else ""
        label = parts[0] if len(parts) == 2 else None
        try:
            if not op or (label is not None and not label):
                raise EstError(404, "not an EST path: /.well-known/est/[label/]operation")
            if op not in GETS and op not in POSTS:
                raise EstError(404, f"{op!r} is not an EST operation this server offers")
            allowed = "GET" if op in GETS else "POST"
            if method != allowed and not (allowed == "GET" and method == "HEAD"):
                raise EstError(405, f"use {allowed} for {op}", {"Allow": allowed})
            if op == "cacerts":
                self.labels.profile_of(label)
                reply = Reply(200, self.cacerts, wire.CERTS_ONLY,
                              {"Content-Transfer-Encoding": "base64"})
            elif op == "csrattrs":
                name = self.labels.profile_of(label) or self.labels.default_profile()
                reply = Reply(200, self.csrattrs[name], wire.CSRATTRS,
                              {"Content-Transfer-Encoding": "base64"})
            else:
                scope_ext = scope.get("extensions") or {}
                client = scope["client"][0] if scope.get("client") else "-"
                authorization = content_type = ""
                for key, value in scope["headers"]:
                    if key == b"authorization":
                        authorization = value.decode("latin-1")
                    elif key == b"content-type":
                        content_type = value.decode("latin-1")
                ctx = Ctx(op, label, authorization, content_type, await read_body(receive),
                          scope_ext.get("certwright.tls"), client)
                reply = await self._in_thread(self.enrollment.handle, ctx)
        except (EstError, CertwrightError) as e:
            reply = render_error(e)
        except Exception:
            log.exception("EST request %s %s failed", method, path)
            reply = text(500, "the server could not process the request")
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in reply.headers.items()]
        if reply.media_type is not None:
            headers.append((b"content-type", reply.media_type.encode("latin-1")))
        headers.append((b"content-length", str(len(reply.body)).encode()))
        return reply.status, headers, reply.body

    async def _in_thread(self, fn: Callable[[Ctx], Reply], ctx: Ctx) -> Reply:
        """Blocking work (the store, scrypt, signing) on this server's threads; made on
        first use, so that a worker process forked after start-up has its own."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=HANDLER_THREADS, thread_name_prefix="est")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, ctx)
