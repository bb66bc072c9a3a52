"""Assembling the EST front-end for the HTTPS listener."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from starlette.routing import Route
from starlette.types import ASGIApp

from certwright.ca.service import CertificateAuthority
from certwright.est.auth import load_anchors
from certwright.est.config import PROTOCOL
from certwright.est.server import EstServer

__all__ = ["client_trust_anchors", "est_prefixes", "est_routes"]


def _anchors(ca: CertificateAuthority) -> dict[str, tuple[x509.Certificate, ...]]:
    root = Path(ca.layout.root) if ca.layout is not None else Path.cwd()
    return load_anchors(ca.config, root)


def est_server(ca: CertificateAuthority) -> EstServer:
    return EstServer(ca, _anchors(ca))


def est_prefixes(ca: CertificateAuthority) -> dict[str, ASGIApp]:
    """The EST front-end takes every path under /.well-known/est/ (RFC 7030 3.2.2)."""
    return {"/.well-known/est/": est_server(ca).asgi}


def est_routes(ca: CertificateAuthority) -> list[Route]:
    """The same front-end as Starlette routes, for an application that wants routes."""
    return est_server(ca).routes()


def client_trust_anchors(ca: CertificateAuthority) -> list[x509.Certificate]:
    """What the HTTPS listener verifies client certificates against: our root and issuing
    CA (simplereenroll) and every profile's est.client_trust_anchors (simpleenroll)."""
    found = [ca.root, *ca.chain]
    for name, certs in _anchors(ca).items():
        if PROTOCOL in ca.config.profiles[name].protocols:
            found += [c for c in certs if c not in found]
    return found
