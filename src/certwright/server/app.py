"""The ASGI applications: the plain-HTTP listener (CRL, OCSP, CA certificates, health)
and the HTTPS listener, which the front-ends of ``certwright.registry`` mount into.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import Any

import anyio.to_thread
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwright.asgi import AsgiEndpoint as AsgiEndpoint
from certwright.asgi import read_body as read_body
from certwright.ca import hierarchy
from certwright.ca.frontend import FrontEnd, Rendered, plain_text
from certwright.ca.service import CertificateAuthority
from certwright.monitor.metrics import LatencyMiddleware, RouteLabel, metrics_endpoint

OCSP_MAX_REQUEST = 16 * 1024
# RFC 5019 section 5: responders serving GET should allow caching until nextUpdate;
# clients refetch by then anyway.
OCSP_CACHE = "public, max-age=3600, no-transform, must-revalidate"

# The latency histogram's labels for today's front-ends, until each front-end's
# registry entry gives its own.
def latency_labels(frontends: tuple[FrontEnd, ...]) -> dict[str, RouteLabel]:
    """The metrics' protocol and endpoint labels by URL prefix, from the front-ends."""
    return {prefix: RouteLabel(f.name, f.endpoints, f.default_endpoint)
            for f in frontends
            for prefix in (f.metrics_prefixes or (*f.prefixes, *f.http_prefixes))}


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed.

    The body is read here, up to the limit, before the application sees the request, and
    handed on in one message. Stopping a streamed body from inside the application does
    not work: Starlette's error middleware turns the exception into a 500 and has already
    answered by the time this middleware could send its 413. The rest of an oversized
    body is left to the server, which reads and discards it after the response so the
    connection is closed cleanly (RFC 9112 9.6) or kept for the next request.
    """

    def __init__(self, app: ASGIApp, limit: int,
                 frontends: tuple[FrontEnd, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        # Each front-end answers in its own format (ACME: a problem document).
        self.renderers = tuple((p, f.render_transport_error) for f in frontends
                               for p in (*f.prefixes, *f.http_prefixes))

    def _too_large(self, scope: Scope) -> Response:
        path = str(scope.get("path", ""))
        render = next((r for p, r in self.renderers if path.startswith(p)), plain_text)
        return _response(render(413, f"request body larger than {self.limit} bytes"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await PlainTextResponse("bad Content-Length\n", 400)(scope, receive, send)
                    return
                if declared > self.limit:
                    # Not reading: a client that sent "Expect: 100-continue" gets the 413
                    # instead of "100 Continue" and never sends the body at all.
                    await self._too_large(scope)(scope, receive, send)
                    return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # http.disconnect: the client is gone; there is no one to answer
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._too_large(scope)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for http.disconnect

        await self.app(scope, replay, send)


def _response(rendered: Rendered) -> Response:
    return Response(rendered.body, rendered.status, media_type=rendered.content_type)


def _too_large(limit: int) -> Response:
    return _response(plain_text(413, f"request body larger than {limit} bytes"))


def build_http_app(ca: CertificateAuthority, frontends: tuple[FrontEnd, ...] = ()) -> ASGIApp:
    """The plain-HTTP listener: what relying parties fetch without TLS (RFC 5280 8,
    RFC 6960 A.1: CRLs and OCSP over HTTP, never HTTPS, to avoid circular validation)."""
    issuing_id = ca.issuer_id
    root_id = hierarchy.issuer_id(ca.root)
    ca_der = {
        issuing_id: ca.chain[0].public_bytes(serialization.Encoding.DER),
        root_id: ca.root.public_bytes(serialization.Encoding.DER),
    }

    async def health(request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(ca.check_store)
        except Exception:
            return JSONResponse({"status": "unavailable", "store": "unreachable"}, 503)
        return JSONResponse({"status": "ok"})

    async def crl(request: Request) -> Response:
        if request.path_params["issuer"] != issuing_id:
            return PlainTextResponse("no such CRL\n", 404)
        stored = await anyio.to_thread.run_sync(ca.crl.current)
        return Response(stored.der, media_type="application/pkix-crl", headers={
            "Cache-Control": "public, max-age=300",
            "Last-Modified": stored.this_update.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        })

    async def ca_cert(request: Request) -> Response:
        der = ca_der.get(request.path_params["issuer"])
        if der is None:
            return PlainTextResponse("no such CA certificate\n", 404)
        # RFC 5280 4.2.2.1: caIssuers over HTTP is a DER certificate, application/pkix-cert.
        return Response(der, media_type="application/pkix-cert",
                        headers={"Cache-Control": "public, max-age=86400"})

    async def root_pem(request: Request) -> Response:
        return Response(ca.root.public_bytes(serialization.Encoding.PEM),
                        media_type="application/x-pem-file")

    async def ocsp_post(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/ocsp-request":
            return PlainTextResponse("Content-Type must be application/ocsp-request\n", 415)
        body = await request.body()
        if len(body) > OCSP_MAX_REQUEST:
            return _too_large(OCSP_MAX_REQUEST)
        der = await anyio.to_thread.run_sync(ca.ocsp.respond, body)
        return Response(der, media_type="application/ocsp-response")

    async def ocsp_get(request: Request) -> Response:
        # RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}.
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        encoded = raw.split("/ocsp/", 1)[1] if "/ocsp/" in raw else request.path_params["req"]
        try:
            body = base64.b64decode(urllib.parse.unquote(encoded), validate=False)
        except (binascii.Error, ValueError):
            body = b""
        der = await anyio.to_thread.run_sync(ca.ocsp.respond, body)
        return Response(der, media_type="application/ocsp-response",
                        headers={"Cache-Control": OCSP_CACHE})

    routes = [
        Route("/health", health),
        Route("/crl/{issuer}.crl", crl),
        Route("/ca/{issuer}.der", ca_cert),
        Route("/root.pem", root_pem),
        Route("/ocsp", ocsp_post, methods=["POST"]),
        Route("/ocsp/{req:path}", ocsp_get, methods=["GET"]),
        Route("/metrics", metrics_endpoint(ca), methods=["GET"]),
    ]
    app: ASGIApp = Starlette(routes=routes)
    http_prefixes = {p: f for f in frontends for p in f.http_prefixes}
    if http_prefixes:
        apps = {f.name: f.app(ca) for f in set(http_prefixes.values()) if f.app is not None}
        app = PrefixDispatch({p: apps[f.name] for p, f in http_prefixes.items()}, app)
    return BodyLimit(app, ca.config.server.max_body_bytes, frontends)


class PrefixDispatch:
    """Requests whose path starts with one of ``prefixes`` go straight to that front-end's
    ASGI application; the rest to ``fallback`` (Starlette). A front-end that routes for
    itself skips Starlette's middleware and router, which cost ACME about a third of
    its per-request time (the body limit still applies: it wraps this)."""

    def __init__(self, prefixes: dict[str, ASGIApp], fallback: ASGIApp) -> None:
        self.prefixes = tuple(prefixes.items())
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for prefix, app in self.prefixes:
                if path.startswith(prefix):
                    await app(scope, receive, send)
                    return
        await self.fallback(scope, receive, send)


def build_https_app(ca: CertificateAuthority, frontends: tuple[FrontEnd, ...] = (),
                    mounts: list[Any] | None = None) -> ASGIApp:
    """The HTTPS listener. Front-ends take whole path prefixes with an ASGI application
    of their own, or add Starlette routes (``mounts``: routes of a single front-end under
    test)."""
    mounts = [*(mounts or []), *(r for f in frontends if f.routes is not None
                                 for r in f.routes(ca))]
    prefixes: dict[str, ASGIApp] = {}
    for f in frontends:
        if f.app is not None and f.prefixes:
            frontend_app = f.app(ca)
            prefixes.update({p: frontend_app for p in f.prefixes})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def index(request: Request) -> Response:
        return JSONResponse({
            "service": "certwright",
            "profiles": sorted(ca.config.profiles),
            "root": f"{ca.config.server.http_url}/root.pem",
        })

    routes: list[Any] = [Route("/health", health), Route("/", index), *mounts]
    app: ASGIApp = Starlette(routes=routes)
    if prefixes:
        app = PrefixDispatch(prefixes, app)
    return LatencyMiddleware(BodyLimit(app, ca.config.server.max_body_bytes, frontends),
                             latency_labels(frontends))
