"""The issuer part of an agent spec: an ACME directory (with its challenge solvers and
EAB) or an EST server, and how to authenticate to it."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from certwright.agent.specbase import Command, command_of, exactly_one
from certwright.configbase import Duration, Strict
from certwright.pki.names import normalize_dns


def _host_port(v: str, what: str = "listen address") -> str:
    _, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{v!r}: give the {what} as HOST:PORT")
    return v


class Http01(Strict):
    """http-01: answer on our own listener (``standalone: 127.0.0.1:80``) or write the
    file under a web server's document root (``webroot: /var/www/html``)."""

    standalone: str | None = None
    webroot: Path | None = None

    @field_validator("standalone")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        return None if v is None else _host_port(v)

    @model_validator(mode="after")
    def _one(self) -> Http01:
        exactly_one(self, ("standalone", "webroot"), "http-01")
        return self


class TlsAlpn01(Strict):
    """tls-alpn-01 (RFC 8737): our own TLS listener answers ALPN ``acme-tls/1`` with the
    validation certificate (``standalone: 0.0.0.0:443``, or the port the CA connects to
    when something in front forwards it)."""

    standalone: str

    @field_validator("standalone")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _host_port(v)


class Rfc2136(Strict):
    """dns-01 through RFC 2136 dynamic updates signed with TSIG (RFC 8945), sent to the
    zone's primary server. ``key_file`` holds the TSIG secret: either a BIND ``key``
    clause (as ``tsig-keygen`` writes it; it also gives the key's name and algorithm) or
    the base64 secret alone (then ``key_name`` is needed). The secret never sits in the
    spec and is never logged."""

    server: str  # HOST:PORT of the primary
    zone: str | None = None  # found by asking the server for the name's SOA when unset
    key_file: Path
    key_name: str | None = None
    algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224",
                       "hmac-sha1"] | None = None
    ttl: int = Field(default=60, ge=0, le=86400)
    timeout: Duration = dt.timedelta(seconds=10)

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        return _host_port(v, "primary server's address")

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else normalize_dns(v.rstrip("."))

    @field_validator("key_file")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"{str(v)!r} is not an absolute path")
        return v


class Dns01(Strict):
    """dns-01 through a command (``hook present|cleanup FQDN VALUE``) or RFC 2136 dynamic
    updates (``rfc2136:``)."""

    hook: Command | None = None
    rfc2136: Rfc2136 | None = None
    # How long to wait after the record is in place before asking the CA to look (the
    # time the zone's other servers take to get it).
    propagation: Duration = dt.timedelta(seconds=0)

    @field_validator("hook", mode="before")
    @classmethod
    def _hook(cls, v: Any) -> Any:
        return command_of(v)

    @model_validator(mode="after")
    def _one(self) -> Dns01:
        exactly_one(self, ("hook", "rfc2136"), "dns-01")
        return self


class Challenge(Strict):
    http_01: Http01 | None = Field(default=None, alias="http-01")
    tls_alpn_01: TlsAlpn01 | None = Field(default=None, alias="tls-alpn-01")
    dns_01: Dns01 | None = Field(default=None, alias="dns-01")

    @model_validator(mode="after")
    def _one(self) -> Challenge:
        exactly_one(self, ("http_01", "tls_alpn_01", "dns_01"), "challenge")
        return self

    @property
    def method(self) -> str:
        if self.http_01 is not None:
            return "http-01 standalone" if self.http_01.standalone else "http-01 webroot"
        if self.tls_alpn_01 is not None:
            return "tls-alpn-01 standalone"
        assert self.dns_01 is not None
        return "dns-01 rfc2136" if self.dns_01.rfc2136 is not None else "dns-01 hook"


class Eab(Strict):
    """RFC 8555 7.3.4 external account binding: the key id and the file holding the
    base64url HMAC key (the key itself never sits in the spec)."""

    kid: str = Field(min_length=1)
    hmac_key_file: Path


class AcmeIssuer(Strict):
    directory: str
    contact: tuple[str, ...] = ()
    eab: Eab | None = None
    challenge: Challenge
    # The CA certificate(s) to trust for the directory's TLS; the system store if unset.
    tls_trust: Path | None = None
    # ARI (RFC 9773) when the directory offers renewalInfo.
    ari: bool = True

    @field_validator("directory")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @field_validator("contact")
    @classmethod
    def _contact(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(c if c.startswith("mailto:") else f"mailto:{c}" for c in v)


class EstIssuer(Strict):
    """RFC 7030: ``{url}/.well-known/est[/{label}]/simpleenroll``."""

    url: str
    label: str | None = None
    username: str | None = None
    password_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    tls_trust: Path | None = None
    # How long to keep polling a pending (202) request before giving up this attempt.
    pending_timeout: Duration = dt.timedelta(minutes=10)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        # RFC 7030 3.2.2: the label is one path segment.
        if v is not None and not re.match(r"^[A-Za-z0-9_.~-]+$", v):
            raise ValueError(f"{v!r} is not a single path segment")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> EstIssuer:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


class Issuer(Strict):
    acme: AcmeIssuer | None = None
    est: EstIssuer | None = None
    # Recorded with each enrollment (ACME: the directory already names it).
    profile: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Issuer:
        exactly_one(self, ("acme", "est"), "issuer")
        return self

    @property
    def protocol(self) -> str:
        return "acme" if self.acme is not None else "est"

    @property
    def url(self) -> str:
        if self.acme is not None:
            return self.acme.directory
        assert self.est is not None
        return self.est.url + (f" label {self.est.label}" if self.est.label else "")

    @property
    def validation(self) -> str:
        if self.acme is not None:
            return self.acme.challenge.method
        assert self.est is not None
        return "est client certificate" if self.est.client_cert else (
            "est basic" if self.est.username else "est")


# -- names ----------------------------------------------------------------------------------
