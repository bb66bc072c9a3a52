"""EST (RFC 7030) as a front-end of the seam: what the server mounts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from certwright.ca.frontend import FrontEnd
from certwright.est.config import EST_OPERATIONS, EstProfile, check_labels

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


def _adapt(profile: dict[str, Any]) -> dict[str, Any]:
    """``est.serverkeygen`` and ``est.reenroll_allow_changes`` used to be the only
    switches for these rules; they now turn on the protocol-neutral ones too, so a
    configuration written before keeps meaning what it meant."""
    est = profile.get("est")
    if isinstance(est, dict):
        if est.get("serverkeygen") is True:
            profile.setdefault("server_keygen", True)
        if est.get("reenroll_allow_changes") is True:
            profile.setdefault("renewal_may_change_names", True)
    return profile


FRONTEND = FrontEnd(
    name="est",
    # RFC 7030 3.2.2: every EST operation is under /.well-known/est/.
    prefixes=("/.well-known/est/",),
    app=_app,
    trust_anchors=_anchors,
    endpoints=frozenset(EST_OPERATIONS),
    profile_settings=EstProfile,
    check_config=check_labels,
    adapt_profile=_adapt,
    cli="certwright.est.cli:est",
)
