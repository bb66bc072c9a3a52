"""ACME (RFC 8555) as a front-end of the seam: what the server mounts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from certwright.acme.config import AcmeProfile, AcmeSettings
from certwright.acme.problems import AcmeProblem
from certwright.ca.frontend import FrontEnd, Rendered

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from certwright.ca.service import CertificateAuthority


def _app(ca: CertificateAuthority) -> ASGIApp:
    from certwright.acme.app import acme_server

    return acme_server(ca).asgi


def _transport_error(status: int, detail: str) -> Rendered:
    # ACME clients read every error as a problem document (RFC 8555 6.7).
    problem = AcmeProblem("malformed", detail, status)
    return Rendered(status, json.dumps(problem.as_json()).encode(),
                    "application/problem+json")


FRONTEND = FrontEnd(
    name="acme",
    prefixes=("/acme/",),
    app=_app,
    render_transport_error=_transport_error,
    endpoints=frozenset({
        "directory", "new-nonce", "new-account", "acct", "orders", "key-change",
        "new-order", "order", "finalize", "authz", "chall", "cert", "revoke-cert",
        "renewal-info"}),
    settings=AcmeSettings,
    profile_settings=AcmeProfile,
    cli="certwright.acme.cli:acme",
)
