"""Assembling the ACME front-end for the HTTPS listener."""

from __future__ import annotations

from starlette.routing import Route
from starlette.types import ASGIApp

from certwright.acme.server import AcmeServer
from certwright.acme.state import AcmeState
from certwright.acme.validation import Validator, settings_from
from certwright.ca.service import CertificateAuthority


def acme_server(ca: CertificateAuthority) -> AcmeServer:
    state = AcmeState(ca.store, ca.clock)
    state.release_interrupted_challenges()
    return AcmeServer(ca, state, Validator(settings_from(ca.config.acme)))


def acme_prefixes(ca: CertificateAuthority) -> dict[str, ASGIApp]:
    """The ACME front-end takes every path under /acme/ (``build_https_app(prefixes=)``)."""
    return {"/acme/": acme_server(ca).asgi}


def acme_routes(ca: CertificateAuthority) -> list[Route]:
    """The same front-end as Starlette routes, for an application that wants routes."""
    return acme_server(ca).routes()
