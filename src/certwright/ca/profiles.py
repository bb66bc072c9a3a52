"""The configuration file and its profiles, validated on load with precise errors.

A profile is the policy for one kind of certificate: which keys, which names, how long,
which usages, who may ask through which protocol, and whether an operator must approve.
Every front-end (ACME, EST, SCEP, CMP, the CLI) is held to the same profile by the RA.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from certwright.ca.keys import KeyProviderSettings
from certwright.configbase import Duration as Duration
from certwright.configbase import Strict as Strict
from certwright.configbase import UniqueKeyLoader as UniqueKeyLoader
from certwright.configbase import explain
from certwright.configbase import format_duration as format_duration
from certwright.configbase import parse_duration as parse_duration
from certwright.errors import config_error
from certwright.pki.keys import RSA_FLOOR_BITS
from certwright.pki.names import canonical_names, normalize_dns


class Approval(enum.Enum):
    AUTO = "auto"
    MANUAL = "manual"


class Protocol(enum.Enum):
    ACME = "acme"
    EST = "est"
    SCEP = "scep"
    CMP = "cmp"
    CLI = "cli"  # local issuance by an operator with access to the data directory
    INTERNAL = "internal"  # the server's own certificates, under ca/builtin.py's profiles


Curve = Literal["P-256", "P-384", "P-521"]

KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
)
KeyUsageName = Literal[
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
]
EkuName = Literal[
    "server_auth", "client_auth", "code_signing", "email_protection", "time_stamping",
    "ocsp_signing",
]


ChallengeType = Literal["http-01", "dns-01", "tls-alpn-01"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Networks an internal CA's validation may connect to by default: the private ranges.
# Loopback is not among them: a profile must name it to allow it.
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def _networks(v: Any) -> Any:
    if isinstance(v, list | tuple):
        try:
            return tuple(ipaddress.ip_network(str(n), strict=True) for n in v)
        except ValueError as e:
            raise ValueError(f"not an IP network: {e}") from None
    return v


class KeyRules(Strict):
    """Which subject keys a profile accepts."""

    rsa: bool = True
    rsa_min_bits: int = 2048
    ecdsa_curves: tuple[Curve, ...] = ("P-256", "P-384")
    ed25519: bool = False

    @field_validator("rsa_min_bits")
    @classmethod
    def _rsa_floor(cls, v: int) -> int:
        if v < RSA_FLOOR_BITS:
            raise ValueError(f"must be at least {RSA_FLOOR_BITS} (smaller RSA keys are broken)")
        return v


class NameRules(Strict):
    """Which names a profile allows in certificates.

    DNS patterns: ``host.example`` matches that name only; ``*.example`` matches every
    name below ``example`` at any depth (not ``example`` itself); ``*`` matches any name.
    """

    dns: tuple[str, ...] = ()
    wildcards: bool = False
    ip: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    uri: tuple[str, ...] = ()  # prefixes, e.g. "spiffe://example.internal/"
    email: tuple[str, ...] = ()  # domains ("example.internal") or "*" for any
    keep_cn: bool = True
    # A CSR with a CN but no subjectAltName: refuse it (False), or take the CN as the one
    # name (True; some SCEP devices can put nothing else in a request).
    cn_as_san: bool = False
    max_names: int = Field(default=100, ge=1, le=1000)

    @field_validator("dns")
    @classmethod
    def _dns_patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for p in v:
            if p == "*":
                out.append(p)
                continue
            base = p[2:] if p.startswith("*.") else p
            try:
                out.append(("*." if p.startswith("*.") else "") + normalize_dns(base))
            except Exception:
                raise ValueError(f"{p!r} is not a DNS name pattern") from None
        return tuple(out)

    @field_validator("ip", mode="before")
    @classmethod
    def _ip_networks(cls, v: Any) -> Any:
        return _networks(v)


class Validity(Strict):
    default: Duration = dt.timedelta(days=90)
    max: Duration = dt.timedelta(days=90)
    # Backdating covers clients whose clocks run a little behind (Boulder uses 1h).
    backdate: Duration = dt.timedelta(hours=1)

    @model_validator(mode="after")
    def _consistent(self) -> Validity:
        if self.max <= dt.timedelta(0):
            raise ValueError("max must be positive")
        if self.default > self.max:
            raise ValueError(
                f"default ({format_duration(self.default)}) is longer than max "
                f"({format_duration(self.max)})"
            )
        if self.backdate > dt.timedelta(days=1):
            raise ValueError("backdate must not exceed 1d")
        return self


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
        return _networks(v)

    @model_validator(mode="after")
    def _window(self) -> AcmeProfile:
        if self.renewal_window_start >= self.renewal_window_end:
            raise ValueError("renewal_window_start must be before renewal_window_end")
        return self


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


class Profile(Strict):
    description: str = ""
    protocols: tuple[Protocol, ...] = (Protocol.CLI,)
    approval: Approval = Approval.AUTO
    keys: KeyRules = KeyRules()
    names: NameRules = NameRules()
    validity: Validity = Validity()
    key_usage: tuple[KeyUsageName, ...] = ("digital_signature", "key_encipherment")
    extended_key_usage: tuple[EkuName, ...] = ("server_auth",)
    # Certificate policy OIDs to assert, e.g. 2.23.140.1.2.1 (CA/B DV) for a public CA.
    policies: tuple[str, ...] = ()
    acme: AcmeProfile = AcmeProfile()
    est: EstProfile = EstProfile()

    @field_validator("policies")
    @classmethod
    def _oids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for oid in v:
            if not re.match(r"^[0-2](\.(0|[1-9][0-9]*))+$", oid):
                raise ValueError(f"{oid!r} is not an object identifier")
        return v

    @field_validator("extended_key_usage")
    @classmethod
    def _eku(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one extended key usage is required")
        return v


class ServerSettings(Strict):
    hostnames: tuple[str, ...] = ("localhost",)
    http_listen: str = "127.0.0.1:8080"
    https_listen: str = "127.0.0.1:8443"
    # Base URLs written into certificates (CRL distribution point, AIA) and given to clients.
    http_url: str = "http://127.0.0.1:8080"
    https_url: str = "https://localhost:8443"
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Server processes sharing the listening sockets (`serve --workers`): one Python
    # process uses one core at most. The store already serves several replicas.
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("http_url", "https_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+$", v.rstrip("/")):
            raise ValueError(f"{v!r} is not a base URL such as http://host:8080")
        return v.rstrip("/")


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


class StoreSettings(Strict):
    # sqlite:///certwright.db is relative to the data directory.
    url: str = "sqlite:///certwright.db"


class IssuanceSettings(Strict):
    # Lint every to-be-signed certificate with pkilint before signing (needs pkilint).
    lint: bool = False
    crl_validity: Duration = dt.timedelta(days=7)
    # The CRL is regenerated when less than this is left before its nextUpdate.
    crl_refresh_before: Duration = dt.timedelta(days=3)
    ocsp_validity: Duration = dt.timedelta(days=4)

    @model_validator(mode="after")
    def _crl_timing(self) -> IssuanceSettings:
        # Otherwise every CRL fetch would find the CRL due and sign a new one.
        if self.crl_refresh_before >= self.crl_validity:
            raise ValueError(
                f"crl_refresh_before ({format_duration(self.crl_refresh_before)}) must be "
                f"shorter than crl_validity ({format_duration(self.crl_validity)})")
        return self


# -- the monitor (certwright.monitor): what must exist, and whom to tell when it does not --

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


class Config(Strict):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    issuance: IssuanceSettings = IssuanceSettings()
    keys: KeyProviderSettings = KeyProviderSettings()
    acme: AcmeSettings = AcmeSettings()
    monitor: MonitorSettings = MonitorSettings()
    default_profile: str = "tls-server"
    profiles: dict[str, Profile]

    @field_validator("profiles")
    @classmethod
    def _names(cls, v: dict[str, Profile]) -> dict[str, Profile]:
        if not v:
            raise ValueError("at least one profile is required")
        for name in v:
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", name):
                raise ValueError(f"profile name {name!r}: use lower-case letters, digits and -")
        return v

    @model_validator(mode="after")
    def _default_exists(self) -> Config:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of the profiles"
            )
        return self

    @model_validator(mode="after")
    def _monitor_profiles(self) -> Config:
        m = self.monitor
        named = [(f"monitor.expect[{i}]", e.profile) for i, e in enumerate(m.expect)]
        named += [(f"monitor.endpoints[{i}]", e.profile) for i, e in enumerate(m.endpoints)]
        named += [(f"monitor.expiring_by_profile.{p}", p) for p in m.expiring_by_profile]
        for where, p in named:
            if p not in self.profiles:
                raise ValueError(f"{where}: profile {p!r} is not one of the profiles")
        return self

    @model_validator(mode="after")
    def _est_labels(self) -> Config:
        seen: dict[str, str] = {}
        for name, p in self.profiles.items():
            if Protocol.EST not in p.protocols:
                continue
            label = self.est_label(name)
            if label in EST_OPERATIONS:
                raise ValueError(f"profiles.{name}: the EST label {label!r} is an EST "
                                 "operation name; set est.label")
            if label in seen:
                raise ValueError(f"profiles.{name}: EST label {label!r} is taken by "
                                 f"profile {seen[label]!r}")
            seen[label] = name
        return self

    def est_label(self, name: str) -> str:
        """The path segment naming profile ``name`` under /.well-known/est/."""
        return self.profiles[name].est.label or name

    def profile(self, name: str) -> Profile:
        from certwright.errors import not_found

        try:
            return self.profiles[name]
        except KeyError:
            raise not_found(
                f"unknown profile {name!r}; known: {', '.join(sorted(self.profiles))}"
            ) from None


ENV_PREFIX = "CERTWRIGHT_"


def _norm(key: str) -> str:
    return key.lower().replace("-", "_")


def apply_environment(data: dict[str, Any], environ: Mapping[str, str]
                      ) -> dict[tuple[str, ...], str]:
    """Apply ``CERTWRIGHT_<SECTION>__<KEY>=value`` overrides to ``data`` in place.

    ``__`` separates levels (``CERTWRIGHT_ACME__HTTP01_PORT=5002``,
    ``CERTWRIGHT_PROFILES__TLS_SERVER__APPROVAL=manual``; a ``-`` in a name is written
    ``_``). Values are read as YAML scalars or flow collections, so ``5002`` is a number
    and ``[a, b]`` a list. Returns where each override landed, by variable name.
    """
    applied: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p for p in name[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            continue
        node: Any = data
        path: list[str] = []
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                break
            key = next((k for k in node if isinstance(k, str) and _norm(k) == _norm(part)),
                       _norm(part))
            path.append(key)
            if i == len(parts) - 1:
                try:
                    node[key] = yaml.safe_load(environ[name])
                except yaml.YAMLError:
                    node[key] = environ[name]
                applied[tuple(path)] = name
            else:
                node = node.setdefault(key, {})
    return applied


def parse_config(data: Any, source: str, environ: Mapping[str, str] | None = None) -> Config:
    applied = apply_environment(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            var = next((v for path, v in applied.items() if loc[:len(path)] == path), None)
            origin = f" (set by {var})" if var else ""
            lines.append(f"{source}: {explain(err, Config)}{origin}")
        raise config_error("; ".join(lines)) from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise config_error(f"{path}: no such file (run `certwright init` first)") from None
    return parse_config_text(text, str(path))


def parse_config_text(text: str, source: str) -> Config:
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise config_error(f"{source}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise config_error(f"{source}: expected a mapping at the top level")
    return parse_config(data, source)
