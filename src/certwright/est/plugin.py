"""EST (RFC 7030) as a front-end of the seam: what the server mounts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from certwright.ca.frontend import FrontEnd
from certwright.ca.profiles import EST_OPERATIONS

if TYPE_CHECKING:
    from cryptography import x509
    from starlette.types import ASGIApp

    from certwright.ca.service import CertificateAuthority


def _app(ca: CertificateAuthority) -> ASGIApp:
    from certwright.est.app import est_server

    return est_server(ca).asgi


def _anchors(ca: CertificateAuthority) -> list[x509.Certificate]:
    from certwright.est.app import client_trust_anchors

    return client_trust_anchors(ca)


FRONTEND = FrontEnd(
    name="est",
    # RFC 7030 3.2.2: every EST operation is under /.well-known/est/.
    prefixes=("/.well-known/est/",),
    app=_app,
    trust_anchors=_anchors,
    endpoints=frozenset(EST_OPERATIONS),
    cli="certwright.est.cli:est",
)
