"""Assembling the ACME front-end for the HTTPS listener."""

from __future__ import annotations

from starlette.routing import Route

from certwright.acme.server import AcmeServer
from certwright.acme.state import AcmeState
from certwright.acme.validation import Validator, settings_from
from certwright.ca.service import CertificateAuthority


def acme_routes(ca: CertificateAuthority) -> list[Route]:
    state = AcmeState(ca.store, ca.clock)
    state.release_interrupted_challenges()
    server = AcmeServer(ca, state, Validator(settings_from(ca.config.acme)))
    return server.routes()
