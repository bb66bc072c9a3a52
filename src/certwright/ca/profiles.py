"""The configuration file and its profiles, validated on load with precise errors.

A profile is the policy for one kind of certificate: which keys, which names, how long,
which usages, who may ask through which protocol, and whether an operator must approve.
Every front-end (ACME, EST, SCEP, CMP, the CLI) is held to the same profile by the RA.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from certwright import registry
from certwright.ca.keys import KeyProviderSettings
from certwright.configbase import Duration as Duration
from certwright.configbase import Strict as Strict
from certwright.configbase import UniqueKeyLoader as UniqueKeyLoader
from certwright.configbase import explain
from certwright.configbase import format_duration as format_duration
from certwright.configbase import parse_duration as parse_duration
from certwright.errors import config_error
from certwright.pki.keys import RSA_FLOOR_BITS
from certwright.pki.names import normalize_dns


class Approval(enum.Enum):
    AUTO = "auto"
    MANUAL = "manual"


def _known_protocol(name: str) -> str:
    known = registry.protocol_names()
    if name not in known:
        offered = [n for n in known if n != registry.INTERNAL]  # not the operator's to use
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(offered)}")
    return name


ProtocolName = Annotated[str, AfterValidator(_known_protocol)]

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


# Networks an internal CA's validation may connect to by default: the private ranges.
# Loopback is not among them: a profile must name it to allow it.
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def ip_networks(v: Any) -> Any:
    """A list of networks as ip_network objects (host bits must be zero)."""
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
        return ip_networks(v)


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


class Profile(Strict):
    description: str = ""
    # The front-ends (certwright.registry) through which this profile may be asked.
    protocols: tuple[ProtocolName, ...] = (registry.LOCAL,)
    approval: Approval = Approval.AUTO
    keys: KeyRules = KeyRules()
    names: NameRules = NameRules()
    validity: Validity = Validity()
    key_usage: tuple[KeyUsageName, ...] = ("digital_signature", "key_encipherment")
    extended_key_usage: tuple[EkuName, ...] = ("server_auth",)
    # Certificate policy OIDs to assert, e.g. 2.23.140.1.2.1 (CA/B DV) for a public CA.
    policies: tuple[str, ...] = ()
    # Rules any protocol may invoke: the server may generate the requester's key pair
    # (EST serverkeygen, CMP central key generation), and a renewal may change the
    # subject or names (RFC 7030 4.2.2 and RFC 9483 4.1.3 want them identical).
    server_keygen: bool = False
    renewal_may_change_names: bool = False

    def section(self, name: str) -> BaseModel:
        """A front-end's sub-section of this profile (its module gives it a type)."""
        section: BaseModel = getattr(self, name)
        return section

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

class Config(Strict):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    issuance: IssuanceSettings = IssuanceSettings()
    keys: KeyProviderSettings = KeyProviderSettings()
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
            if registry.INTERNAL in v[name].protocols:
                raise ValueError(f"profiles.{name}: protocol {registry.INTERNAL!r} is the "
                                 "server's own; no configured profile may accept it")
        return v

    @model_validator(mode="after")
    def _default_exists(self) -> Config:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of the profiles"
            )
        return self

    @model_validator(mode="after")
    def _frontends(self) -> Config:
        for frontend in registry.frontends():
            if frontend.check_config is not None:
                frontend.check_config(self)
        return self

    def section(self, name: str) -> BaseModel:
        """A front-end's top-level section (its module gives it a type)."""
        section: BaseModel = getattr(self, name)
        return section

    def reserved_protocols(self) -> dict[str, tuple[str, ...]]:
        """Each profile that lists a protocol whose front-end is not built yet
        (``registry.RESERVED``, which older ``certwright init``s wrote into every
        profile), with those protocols: the profile loads, and nothing answers them."""
        found = {name: tuple(p for p in profile.protocols if p in registry.RESERVED)
                 for name, profile in self.profiles.items()}
        return {name: protocols for name, protocols in found.items() if protocols}

    def reserved_warning(self) -> str | None:
        """One line for the operator when a profile lists such a protocol."""
        found = self.reserved_protocols()
        if not found:
            return None
        protocols = sorted({p for ps in found.values() for p in ps})
        return (f"profile{'s' if len(found) > 1 else ''} {', '.join(sorted(found))} "
                f"list{'' if len(found) > 1 else 's'} {', '.join(protocols)}, which no "
                "front-end serves yet: nothing answers "
                f"{'them' if len(protocols) > 1 else 'it'} (remove "
                f"{'them' if len(protocols) > 1 else 'it'} from protocols to silence this)")

    def profile(self, name: str) -> Profile:
        from certwright.errors import not_found

        try:
            return self.profiles[name]
        except KeyError:
            raise not_found(
                f"unknown profile {name!r}; known: {', '.join(sorted(self.profiles))}"
            ) from None


@functools.cache
def config_model() -> type[Config]:
    """The configuration model: the core's sections composed with each front-end's
    top-level section and profile sub-section (certwright.registry), so a typo anywhere
    still gets "unknown key (did you mean ...?)"."""
    frontends = registry.frontends()

    def adapt(data: Any) -> Any:
        if isinstance(data, dict):
            for frontend in frontends:
                if frontend.adapt_profile is not None:
                    data = frontend.adapt_profile(dict(data))
        return data

    profile_fields: dict[str, Any] = {
        f.name: (f.profile_settings, f.profile_settings())
        for f in frontends if f.profile_settings is not None}
    class Adapted(Profile):
        @model_validator(mode="before")
        @classmethod
        def _adapt(cls, data: Any) -> Any:
            return adapt(data)

    profile = pydantic.create_model("Profile", __base__=Adapted, **profile_fields)
    config_fields: dict[str, Any] = {
        f.name: (f.settings, f.settings()) for f in frontends if f.settings is not None}
    composed: type[Config] = pydantic.create_model(
        "Config", __base__=Config, profiles=(dict[str, profile], ...), **config_fields)
    return composed


def profile_model() -> type[Profile]:
    """The composed profile model (the core's rules and each front-end's sub-section)."""
    composed: type[Profile] = config_model().model_fields["profiles"].annotation.__args__[1]  # type: ignore[union-attr]
    return composed


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
        model = config_model()
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            var = next((v for path, v in applied.items() if loc[:len(path)] == path), None)
            origin = f" (set by {var})" if var else ""
            lines.append(f"{source}: {explain(err, model)}{origin}")
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
