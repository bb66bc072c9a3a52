"""Assembling the ACME front-end for the HTTPS listener."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.routing import Route
from starlette.types import ASGIApp

from certwright.acme import config as acmeconfig
from certwright.acme.ports import AcmeStorage
from certwright.acme.server import AcmeServer
from certwright.acme.validation import Validator, settings_from

if TYPE_CHECKING:
    from certwright.ca.service import CertificateAuthority


def acme_storage(ca: CertificateAuthority) -> AcmeStorage:
    """ACME's own storage, as the storage layer registers it ("acme")."""
    return cast(AcmeStorage, ca.repository("acme"))


def acme_server(ca: CertificateAuthority) -> AcmeServer:
    storage = acme_storage(ca)
    storage.release_interrupted_challenges()
    return AcmeServer(ca, storage, Validator(settings_from(acmeconfig.settings(ca.config))))


def acme_prefixes(ca: CertificateAuthority) -> dict[str, ASGIApp]:
    """The ACME front-end takes every path under /acme/ (``build_https_app(prefixes=)``)."""
    return {"/acme/": acme_server(ca).asgi}


def acme_routes(ca: CertificateAuthority) -> list[Route]:
    """The same front-end as Starlette routes, for an application that wants routes."""
    return acme_server(ca).routes()
