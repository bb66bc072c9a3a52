"""ACME's section of certwright.yaml: server-wide validation settings (``acme:``) and each
profile's ACME settings (``profiles.<name>.acme:``), composed into the configuration by
the registry."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any, Literal, cast

from pydantic import Field, field_validator, model_validator

from certwright.ca.profiles import PRIVATE_NETWORKS, Config, Profile, ip_networks
from certwright.configbase import Duration, Strict

PROTOCOL = "acme"

ChallengeType = Literal["http-01", "dns-01", "tls-alpn-01"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimits(Strict):
    window: Duration = dt.timedelta(hours=3)
    orders_per_account: int = Field(default=300, ge=1)
    orders_per_profile: int = Field(default=10000, ge=1)
    pending_authorizations_per_account: int = Field(default=300, ge=1)


class AcmeProfile(Strict):
    """How the ACME front-end serves a profile (its directory is /acme/<profile>/)."""

    eab_required: bool = False
    terms_of_service: str | None = None
    website: str | None = None
    caa_identities: tuple[str, ...] = ()
    # RFC 8659: refuse names whose CAA records do not name one of caa_identities.
    check_caa: bool = False
    challenges: tuple[ChallengeType, ...] = ("http-01", "dns-01", "tls-alpn-01")
    # Validation connects only to addresses inside these networks (SSRF protection).
    validation_networks: tuple[IPNetwork, ...] = tuple(
        ipaddress.ip_network(n) for n in PRIVATE_NETWORKS)
    order_lifetime: Duration = dt.timedelta(days=7)
    pending_authorization_lifetime: Duration = dt.timedelta(days=7)
    # How long a valid authorization is reused for new orders of the same account.
    authorization_lifetime: Duration = dt.timedelta(days=30)
    # ARI (RFC 9773): the suggested renewal window, as fractions of the lifetime.
    renewal_window_start: float = Field(default=2 / 3, gt=0, lt=1)
    renewal_window_end: float = Field(default=5 / 6, gt=0, lt=1)
    rate_limits: RateLimits = RateLimits()

    @field_validator("validation_networks", mode="before")
    @classmethod
    def _validation_networks(cls, v: Any) -> Any:
        return ip_networks(v)

    @model_validator(mode="after")
    def _window(self) -> AcmeProfile:
        if self.renewal_window_start >= self.renewal_window_end:
            raise ValueError("renewal_window_start must be before renewal_window_end")
        return self


class AcmeSettings(Strict):
    """Server-wide settings of ACME validation (tests point them at a local DNS server)."""

    # host:port of the DNS resolver validation uses; None: the system's resolvers.
    dns_resolver: str | None = None
    http01_port: int = Field(default=80, ge=1, le=65535)
    tlsalpn01_port: int = Field(default=443, ge=1, le=65535)
    timeout: Duration = dt.timedelta(seconds=10)
    nonce_lifetime: Duration = dt.timedelta(hours=1)
    max_redirects: int = Field(default=10, ge=0, le=10)
    # Validations connecting out at once, per server process; the rest wait their turn
    # (their challenges stay "processing"), so many accounts cannot exhaust memory or
    # sockets through validation.
    max_concurrent_validations: int = Field(default=32, ge=1, le=1024)

    @field_validator("dns_resolver")
    @classmethod
    def _resolver(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError(f"{v!r}: give the resolver as IP:PORT") from None
        if not sep or not port.isdigit():
            raise ValueError(f"{v!r}: give the resolver as IP:PORT")
        return v


def profile_settings(profile: Profile) -> AcmeProfile:
    """A profile's ``acme`` sub-section."""
    return cast(AcmeProfile, profile.section("acme"))


def settings(config: Config) -> AcmeSettings:
    """The top-level ``acme`` section."""
    return cast(AcmeSettings, config.section("acme"))
