"""The seam: what a protocol front-end tells the server about itself.

A front-end (ACME, EST, the monitor's check-in API, SCEP and CMP next) is a package
that exports one ``FrontEnd``; ``certwright.registry`` lists them and ``server/`` mounts
whatever the registry holds. Neither ``ca/`` nor ``server/`` names a protocol: a new
front-end is a new package and one line in the registry (DESIGN.md, "adding a
front-end").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from cryptography import x509
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp

    from certwright.ca.service import CertificateAuthority


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A transport-level error (an oversized body, ...) in a front-end's own format."""

    status: int
    body: bytes
    content_type: str


def plain_text(status: int, detail: str) -> Rendered:
    return Rendered(status, detail.encode() + b"\n", "text/plain; charset=utf-8")


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """One way into the CA.

    ``name`` is the protocol's name everywhere: in a profile's ``protocols``, as the
    top-level section of ``certwright.yaml`` and the sub-section of each profile its
    settings live in, as the ``protocol`` label of its metrics, and in the audit log.
    """

    name: str
    # False for a front-end that enrolls nothing (the monitor's check-in API): its name
    # is then not a protocol a profile can list.
    enrolls: bool = True
    # Path prefixes it takes whole on the HTTPS listener, and on the plain-HTTP
    # listener for protocols that protect their own messages (SCEP, CMP).
    prefixes: tuple[str, ...] = ()
    http_prefixes: tuple[str, ...] = ()
    # The ASGI application serving those prefixes, built once per server process.
    app: Callable[[CertificateAuthority], ASGIApp] | None = None
    # Starlette routes for a front-end that does not need a prefix of its own.
    routes: Callable[[CertificateAuthority], list[BaseRoute]] | None = None
    # How a transport error the server raises before the front-end sees the request
    # (an oversized body) reaches this front-end's clients.
    render_transport_error: Callable[[int, str], Rendered] = plain_text
    # Extra certificates the HTTPS listener accepts client certificates from.
    trust_anchors: Callable[[CertificateAuthority], list[x509.Certificate]] | None = None
    # Its configuration: a top-level section and a per-profile sub-section, each a
    # pydantic model with defaults; ``check_config`` sees the whole configuration once
    # it is valid, for rules that span sections (raise ValueError with the key path).
    settings: type[BaseModel] | None = None
    profile_settings: type[BaseModel] | None = None
    check_config: Callable[[Any], None] | None = None
    # Rewrites a profile's raw mapping before validation: how a front-end keeps an older
    # spelling of a protocol-neutral rule working (EST's serverkeygen).
    adapt_profile: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Work it does in the background of the server's first process (the monitor's
    # periodic evaluation).
    background: Callable[[CertificateAuthority, Path], Coroutine[Any, Any, None]] | None = None
    # Metrics: requests under these prefixes (default: its own) carry its name as their
    # protocol label and, as endpoint, the last path segment that is one of
    # ``endpoints`` (an operation, never an id: label values come from a fixed set).
    metrics_prefixes: tuple[str, ...] = ()
    endpoints: frozenset[str] = frozenset()
    default_endpoint: str = "other"
    # Its operator commands: "module:attribute" of a click group, imported on use.
    cli: str | None = None
