"""What every part of the EST front-end shares: its paths and operations, one request as
the handlers see it, one answer, and how an error becomes an HTTP status.

Statuses (RFC 7030 4.2.3 and the HTTP semantics it refers to): 400 bad body, 401 (with
WWW-Authenticate) missing or wrong credentials, 403 a policy refusal with the RA's
reason, 404 unknown label or operation, 405 wrong method, 415 wrong media type, 500
without internal detail. A core error's status is ``certwright.errors.meaning(kind)``;
EST refines it only for a wrong credential (401, which the core calls UNAUTHORIZED).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from certwright.ca.profiles import Config
from certwright.errors import CertwrightError, meaning
from certwright.est import config as estconfig
from certwright.est.config import PROTOCOL

__all__ = ["ENROLL", "GETS", "KEYGEN", "POSTS", "PREFIX", "REENROLL", "Ctx", "EstError",
           "Labels", "Reply", "render_error", "text", "unauthenticated"]

log = logging.getLogger("certwright.est")

PREFIX = "/.well-known/est"
REALM = 'Basic realm="certwright EST"'
ENROLL, REENROLL, KEYGEN = "simpleenroll", "simplereenroll", "serverkeygen"
GETS = ("cacerts", "csrattrs")
POSTS = (ENROLL, REENROLL, KEYGEN)


class EstError(Exception):
    """An answer decided by the front-end itself (not by the core)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def unauthenticated(detail: str) -> EstError:
    # RFC 7030 3.2.3 / RFC 9110 11.6.1: a 401 names the scheme the client may answer with.
    return EstError(401, detail, {"WWW-Authenticate": REALM})


@dataclasses.dataclass(frozen=True)
class Ctx:
    """One EST request as the handlers see it."""

    operation: str
    label: str | None
    authorization: str
    content_type: str
    body: bytes
    tls: dict[str, Any] | None  # the "certwright.tls" scope extension (server/tls.py)
    client: str


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    media_type: str | None = "text/plain; charset=utf-8"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def text(status: int, detail: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, (detail.rstrip("\n") + "\n").encode(), headers=headers or {})


def render_error(e: CertwrightError | EstError) -> Reply:
    if isinstance(e, EstError):
        return text(e.status, e.detail, e.headers)
    m = meaning(e.kind)
    if m.internal:
        log.error("EST request failed: %s", e)
        return text(500, "the server could not process the request")
    return text(m.status, str(e))


class Labels:
    """The profiles that accept EST, by the label a path names them with."""

    def __init__(self, config: Config) -> None:
        self.default = config.default_profile
        self.profiles = {estconfig.label(config, name): name for name, p in config.profiles.items()
                         if PROTOCOL in p.protocols}

    def accepts(self, profile: str) -> bool:
        return profile in self.profiles.values()

    def profile_of(self, label: str | None) -> str | None:
        """The profile a path's label names (None without a label); 404 for no such."""
        if label is None:
            return None
        name = self.profiles.get(label)
        if name is None:
            raise EstError(404, f"no EST profile is labelled {label!r}")
        return name

    def default_profile(self) -> str:
        if not self.accepts(self.default):
            raise EstError(404, f"the default profile {self.default!r} does not accept EST; "
                           "name a profile in the path")
        return self.default
