"""The monitor's section of certwright.yaml (``monitor:``): expectations, endpoints to
probe, expiry thresholds, alerts; composed into the configuration by the registry."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Literal, cast

from pydantic import BeforeValidator, Field, field_validator, model_validator

from certwright.ca.profiles import Config
from certwright.configbase import Duration, Strict, parse_duration
from certwright.pki.names import canonical_names

Severity = Literal["info", "warning", "critical"]
FindingKind = Literal["missing", "renewal-failing", "expiring", "expired", "name-mismatch",
                      "stale-deployment", "agent-silent", "pending-approval-stuck"]


ExpectedNames = Annotated[tuple[str, ...], BeforeValidator(canonical_names), Field(min_length=1)]


def _threshold(v: object) -> float | dt.timedelta:
    """``33%`` of the lifetime left, or a duration (``10d``) left."""
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            fraction = float(v.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{v!r} is not a percentage such as 33%") from None
        if not 0 < fraction < 1:
            raise ValueError(f"{v!r}: a percentage between 0 and 100")
        return fraction
    return parse_duration(v)


Threshold = Annotated[float | dt.timedelta, BeforeValidator(_threshold)]


class ExpiryThresholds(Strict):
    """When a certificate that is still valid becomes a finding: this much left of its
    lifetime (``33%``) or this long before notAfter (``10d``)."""

    warning: Threshold = 1 / 3
    critical: Threshold = 0.1


class ExpectedCertificate(Strict):
    """A host without an agent must hold a certificate for ``names`` from ``profile``:
    one must have been issued (an unrevoked certificate with exactly these names) by
    ``deadline``, or within ``grace`` (default ``monitor.grace``) of first being declared."""

    id: str | None = None  # default HOST/first-name
    host: str
    names: ExpectedNames
    profile: str
    deadline: dt.datetime | None = None
    grace: Duration | None = None

    @field_validator("deadline")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-03-01T00:00:00Z")
        return v

    @property
    def key(self) -> str:
        return f"declared:{self.id or self.host + '/' + self.names[0]}"


class ExpectedEndpoint(Strict):
    """A TLS endpoint that must serve our newest certificate for ``names`` (probed)."""

    address: str  # HOST:PORT to connect to
    sni: str | None = None  # default: the address's host, when it is a DNS name
    names: ExpectedNames
    profile: str
    grace: Duration | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r} is not HOST:PORT")
        return v

    @property
    def key(self) -> str:
        return f"endpoint:{self.address}" + (f"/{self.sni}" if self.sni else "")


class WebhookSettings(Strict):
    url: str
    # A file (relative to the data directory) holding the HMAC-SHA256 key; the signature
    # header is "X-Certwright-Signature: sha256=HEX(HMAC(key, body))".
    secret_file: Path
    timeout: Duration = dt.timedelta(seconds=10)
    attempts: int = Field(default=4, ge=1, le=10)
    backoff: Duration = dt.timedelta(seconds=1)  # doubled after each failed attempt

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v


class SmtpSettings(Strict):
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(alias="from")
    to: tuple[str, ...] = Field(min_length=1)
    starttls: bool = False
    tls: bool = False  # implicit TLS (port 465)
    username: str | None = None
    password_file: Path | None = None  # relative to the data directory
    timeout: Duration = dt.timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_tls(self) -> SmtpSettings:
        if self.starttls and self.tls:
            raise ValueError("choose starttls or tls, not both")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        return self


class AlertSettings(Strict):
    webhook: WebhookSettings | None = None
    smtp: SmtpSettings | None = None
    # An open finding is alerted again this often; 0 turns reminders off.
    reminder: Duration = dt.timedelta(hours=24)
    min_severity: Severity = "warning"


class AgentCheckinSettings(Strict):
    # An agent that does not say how often it checks in is expected this often.
    interval: Duration = dt.timedelta(hours=1)
    # agent-silent: no check-in for the agent's interval plus this.
    grace: Duration = dt.timedelta(minutes=15)


class MonitorSettings(Strict):
    interval: Duration = dt.timedelta(minutes=5)  # the server's evaluation interval
    grace: Duration = dt.timedelta(hours=1)  # missing: expected this long, still absent
    expect: tuple[ExpectedCertificate, ...] = ()
    endpoints: tuple[ExpectedEndpoint, ...] = ()
    expiring: ExpiryThresholds = ExpiryThresholds()
    expiring_by_profile: dict[str, ExpiryThresholds] = Field(default_factory=dict)
    agents: AgentCheckinSettings = AgentCheckinSettings()
    pending_approval_max_age: Duration = dt.timedelta(hours=24)
    probe_timeout: Duration = dt.timedelta(seconds=5)
    severity: dict[FindingKind, Severity] = Field(default_factory=dict)  # override a kind's default severity
    alerts: AlertSettings = AlertSettings()

    @model_validator(mode="after")
    def _unique(self) -> MonitorSettings:
        keys = [e.key for e in self.expect] + [e.key for e in self.endpoints]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"expectations declared twice: {', '.join(dup)} (set id)")
        return self


def settings(config: Config) -> MonitorSettings:
    """The top-level ``monitor`` section."""
    return cast(MonitorSettings, config.section("monitor"))


def check_profiles(config: Config) -> None:
    """Every profile the monitor section names exists."""
    m = settings(config)
    named = [(f"monitor.expect[{i}]", e.profile) for i, e in enumerate(m.expect)]
    named += [(f"monitor.endpoints[{i}]", e.profile) for i, e in enumerate(m.endpoints)]
    named += [(f"monitor.expiring_by_profile.{p}", p) for p in m.expiring_by_profile]
    for where, p in named:
        if p not in config.profiles:
            raise ValueError(f"{where}: profile {p!r} is not one of the profiles")
