"""EST's section of certwright.yaml: each profile's EST settings (``profiles.<name>.est:``),
composed into the configuration by the registry."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import cast

from pydantic import field_validator

from certwright.ca.profiles import Config, Profile
from certwright.configbase import Duration, Strict

PROTOCOL = "est"

# The operation names of RFC 7030 section 3.2.2: a label may not be one of them, or
# /.well-known/est/<label>/<operation> and /.well-known/est/<operation> would collide.
EST_OPERATIONS = ("cacerts", "simpleenroll", "simplereenroll", "csrattrs", "serverkeygen",
                  "fullcmc")


class EstProfile(Strict):
    """How the EST front-end serves a profile (RFC 7030): its operations are under
    /.well-known/est/<label>/ (and under /.well-known/est/ for requesters bound to it)."""

    # The path segment naming this profile (RFC 7030 3.2.2); None: the profile's name.
    label: str | None = None
    # Accept HTTP Basic bootstrap credentials (`certwright est credential add`).
    basic_auth: bool = True
    # /serverkeygen (RFC 7030 4.4): the server makes the key pair and returns it.
    serverkeygen: bool = False
    # simplereenroll may change the subject or the names (RFC 7030 4.2.2 says they MUST
    # be identical; this relaxes it). Re-keying is always allowed.
    reenroll_allow_changes: bool = False
    # CA certificates (PEM files, relative to the data directory) whose certificates
    # authenticate simpleenroll over mutual TLS, such as a manufacturer's IDevID CA.
    # They must include the CA that issues the client certificates, since the server
    # sees only the client's own certificate.
    client_trust_anchors: tuple[Path, ...] = ()
    # The Retry-After of a 202 (request held for an operator), in seconds.
    retry_after: Duration = dt.timedelta(seconds=60)
    # RFC 7030 3.5: the CSR's challengePassword must carry the connection's tls-unique
    # value, binding the CSR to the authenticated TLS session. TLS 1.2 only (tls-unique
    # is undefined for TLS 1.3), so clients of such a profile must use TLS 1.2.
    tls_unique_pop: bool = False

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", v):
            raise ValueError(f"{v!r}: a label is one path segment of letters, digits, "
                             "'.', '_' and '-'")
        if v in EST_OPERATIONS:
            raise ValueError(f"{v!r} is an EST operation name")
        return v

    @field_validator("retry_after")
    @classmethod
    def _retry_after(cls, v: dt.timedelta) -> dt.timedelta:
        if not dt.timedelta(seconds=1) <= v <= dt.timedelta(days=1):
            raise ValueError("must be between 1s and 1d")
        return v


def profile_settings(profile: Profile) -> EstProfile:
    """A profile's ``est`` sub-section."""
    return cast(EstProfile, profile.section("est"))


def label(config: Config, name: str) -> str:
    """The path segment naming profile ``name`` under /.well-known/est/."""
    return profile_settings(config.profiles[name]).label or name


def check_labels(config: Config) -> None:
    """Every EST profile's label is distinct and is not an operation name."""
    seen: dict[str, str] = {}
    for name, p in config.profiles.items():
        if PROTOCOL not in p.protocols:
            continue
        segment = label(config, name)
        if segment in EST_OPERATIONS:
            raise ValueError(f"profiles.{name}: the EST label {segment!r} is an EST "
                             "operation name; set est.label")
        if segment in seen:
            raise ValueError(f"profiles.{name}: EST label {segment!r} is taken by "
                             f"profile {seen[segment]!r}")
        seen[segment] = name
