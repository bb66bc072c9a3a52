"""The ASGI applications: the plain-HTTP listener (CRL, OCSP, CA certificates, health)
and the HTTPS listener, which the protocol front-ends (ACME, EST, SCEP, CMP) mount into.
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

from certwright.ca import hierarchy
from certwright.ca.profiles import EST_OPERATIONS
from certwright.ca.service import CertificateAuthority
from certwright.monitor.metrics import LatencyMiddleware, RouteLabel, metrics_endpoint

OCSP_MAX_REQUEST = 16 * 1024
# RFC 5019 section 5: responders serving GET should allow caching until nextUpdate;
# clients refetch by then anyway.
OCSP_CACHE = "public, max-age=3600, no-transform, must-revalidate"

# The latency histogram's labels for today's front-ends, until each front-end's
# registry entry gives its own.
LATENCY_LABELS = {
    "/acme/": RouteLabel("acme", frozenset({
        "directory", "new-nonce", "new-account", "acct", "orders", "key-change",
        "new-order", "order", "finalize", "authz", "chall", "cert", "revoke-cert",
        "renewal-info"})),
    "/.well-known/est/": RouteLabel("est", frozenset(EST_OPERATIONS)),
    "/scep": RouteLabel("scep", default="pkiclient"),
    "/cmp": RouteLabel("cmp", default="pkimessage"),
    "/monitor/": RouteLabel("monitor", frozenset({"checkin"})),
}


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed.

    The body is read here, up to the limit, before the application sees the request, and
    handed on in one message. Stopping a streamed body from inside the application does
    not work: Starlette's error middleware turns the exception into a 500 and has already
    answered by the time this middleware could send its 413. The rest of an oversized
    body is left to the server, which reads and discards it after the response so the
    connection is closed cleanly (RFC 9112 9.6) or kept for the next request.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

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
                    await _too_large(self.limit, scope)(scope, receive, send)
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
                await _too_large(self.limit, scope)(scope, receive, send)
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


def _too_large(limit: int, scope: Scope | None = None) -> Response:
    detail = f"request body larger than {limit} bytes"
    if scope is not None and str(scope.get("path", "")).startswith("/acme/"):
        # ACME clients read errors as problem documents (RFC 8555 6.7).
        return JSONResponse({"type": "urn:ietf:params:acme:error:malformed",
                             "detail": detail, "status": 413}, 413,
                            media_type="application/problem+json")
    return PlainTextResponse(detail + "\n", 413)


def build_http_app(ca: CertificateAuthority) -> ASGIApp:
    """The plain-HTTP listener: what relying parties fetch without TLS (RFC 5280 8,
    RFC 6960 A.1: CRLs and OCSP over HTTP, never HTTPS, to avoid circular validation)."""
    issuing_id = ca.authority.issuer_id
    root_id = hierarchy.issuer_id(ca.root)
    ca_der = {
        issuing_id: ca.chain[0].public_bytes(serialization.Encoding.DER),
        root_id: ca.root.public_bytes(serialization.Encoding.DER),
    }

    async def health(request: Request) -> Response:
        def probe() -> int:
            return ca.store.count_certificates()

        try:
            await anyio.to_thread.run_sync(probe)
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
    app = Starlette(routes=routes)
    return BodyLimit(app, ca.config.server.max_body_bytes)


class AsgiEndpoint:
    """A front-end's plain ASGI callable as a Starlette route's endpoint: Starlette
    treats a bound method as a request-response function, an object with ``__call__``
    as an ASGI application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    """The request body of a plain ASGI request (``BodyLimit`` has capped its size)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


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


def build_https_app(ca: CertificateAuthority, mounts: list[Any] | None = None,
                    prefixes: dict[str, ASGIApp] | None = None) -> ASGIApp:
    """The HTTPS listener. Protocol front-ends add their routes through ``mounts``, or
    take a whole path prefix with an ASGI application of their own (``prefixes``)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def index(request: Request) -> Response:
        return JSONResponse({
            "service": "certwright",
            "profiles": sorted(ca.config.profiles),
            "root": f"{ca.config.server.http_url}/root.pem",
        })

    routes: list[Any] = [Route("/health", health), Route("/", index), *(mounts or [])]
    app: ASGIApp = Starlette(routes=routes)
    if prefixes:
        app = PrefixDispatch(prefixes, app)
    return LatencyMiddleware(BodyLimit(app, ca.config.server.max_body_bytes), LATENCY_LABELS)
