"""Agent specs: what certificate a service needs, one YAML file per spec.

A spec names its issuer (ACME or EST), where the names come from, the key, the files
to write, the hooks to run and the endpoints to check. It is validated on load with the
same loader as the CA's configuration (duplicate keys refused, errors naming the file
and the key: ``web.yaml: output.mode: ...``).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from certwright.configbase import Duration, Strict, UniqueKeyLoader, explain
from certwright.errors import config_error
from certwright.pki.names import normalize_dns

SPEC_SUFFIXES = (".yaml", ".yml")
_SPEC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _exactly_one(model: Strict, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        raise ValueError(f"{what}: give exactly one of {', '.join(fields)}"
                         + (f" (got {', '.join(given)})" if given else ""))


class Command(Strict):
    """A program and its arguments (no shell), with a time-out."""

    run: tuple[str, ...] = Field(min_length=1)
    timeout: Duration = dt.timedelta(seconds=60)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, v: dt.timedelta) -> dt.timedelta:
        if v <= dt.timedelta(0):
            raise ValueError("must be positive")
        return v


def _command(v: Any) -> Any:
    # A bare string or list is the command itself.
    if isinstance(v, str):
        return {"run": [v]}
    if isinstance(v, list | tuple):
        return {"run": list(v)}
    return v


# -- issuers --------------------------------------------------------------------------------


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
        _exactly_one(self, ("standalone", "webroot"), "http-01")
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
        return _command(v)

    @model_validator(mode="after")
    def _one(self) -> Dns01:
        _exactly_one(self, ("hook", "rfc2136"), "dns-01")
        return self


class Challenge(Strict):
    http_01: Http01 | None = Field(default=None, alias="http-01")
    tls_alpn_01: TlsAlpn01 | None = Field(default=None, alias="tls-alpn-01")
    dns_01: Dns01 | None = Field(default=None, alias="dns-01")

    @model_validator(mode="after")
    def _one(self) -> Challenge:
        _exactly_one(self, ("http_01", "tls_alpn_01", "dns_01"), "challenge")
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
        _exactly_one(self, ("acme", "est"), "issuer")
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


class HostNames(Strict):
    fqdn: bool = True
    ips: bool = False


class NameSource(Strict):
    """One source of names; a spec combines any number of them."""

    static: tuple[str, ...] | None = None
    nginx: Path | None = None
    apache: Path | None = None
    command: Command | None = None
    host: HostNames | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _cmd(cls, v: Any) -> Any:
        return _command(v)

    @model_validator(mode="after")
    def _one(self) -> NameSource:
        _exactly_one(self, ("static", "nginx", "apache", "command", "host"), "name source")
        return self


class Subject(Strict):
    # The CN, when one is wanted; it must be one of the derived names.
    cn: str | None = None


# -- key and files --------------------------------------------------------------------------


class KeySpec(Strict):
    type: Literal["ecdsa", "rsa", "ed25519"] = "ecdsa"
    curve: Literal["P-256", "P-384", "P-521"] = "P-256"
    bits: int = 3072
    # Keep the current key on renewal instead of generating a new one.
    reuse: bool = False

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in (2048, 3072, 4096):
            raise ValueError("RSA keys are 2048, 3072 or 4096 bits")
        return v

    def __str__(self) -> str:
        return {"ecdsa": f"ECDSA {self.curve}", "rsa": f"RSA {self.bits}",
                "ed25519": "Ed25519"}[self.type]


def _mode(v: Any) -> Any:
    if isinstance(v, str):
        if not re.match(r"^0?[0-7]{3}$", v):
            raise ValueError(f"{v!r} is not an octal mode such as 0644")
        return int(v, 8)
    return v


class Pkcs12(Strict):
    file: str
    passphrase_file: Path


class Output(Strict):
    """The files to write, by name inside ``directory``. Each is a symlink into the
    versioned store beside it (see ``agent.install``)."""

    directory: Path
    key: str = "privkey.pem"
    cert: str = "cert.pem"
    chain: str | None = None
    fullchain: str | None = None
    combined: str | None = None  # key then full chain, for haproxy and friends
    pkcs12: Pkcs12 | None = None
    owner: str | int | None = None
    group: str | int | None = None
    mode: int = 0o644
    key_mode: int = 0o600

    @field_validator("mode", "key_mode", mode="before")
    @classmethod
    def _modes(cls, v: Any) -> Any:
        return _mode(v)

    @field_validator("directory")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"{str(v)!r} is not an absolute path")
        return v

    @field_validator("key", "cert", "chain", "fullchain", "combined")
    @classmethod
    def _file_name(cls, v: str | None) -> str | None:
        if v is not None and (not _FILE_NAME.match(v) or v.startswith(".certwright")):
            raise ValueError(f"{v!r}: give a plain file name inside directory")
        return v

    @field_validator("mode")
    @classmethod
    def _public_mode(cls, v: int) -> int:
        if v & 0o022:
            raise ValueError(f"{v:04o} lets others write the files")
        return v

    @field_validator("key_mode")
    @classmethod
    def _key_mode(cls, v: int) -> int:
        if v not in (0o600, 0o640, 0o400, 0o440):
            raise ValueError(f"{v:04o}: a key is readable by its owner and at most its group "
                             "(0600 or 0640)")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> Output:
        names = [n for n in (self.key, self.cert, self.chain, self.fullchain, self.combined,
                             self.pkcs12.file if self.pkcs12 else None) if n is not None]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"file name {dup[0]!r} is used twice")
        if self.pkcs12 is not None and not _FILE_NAME.match(self.pkcs12.file):
            raise ValueError(f"pkcs12.file {self.pkcs12.file!r}: give a plain file name")
        return self

    def files(self) -> dict[str, str]:
        """Role -> file name, for every file this spec writes."""
        out = {"key": self.key, "cert": self.cert}
        for role in ("chain", "fullchain", "combined"):
            name = getattr(self, role)
            if name is not None:
                out[role] = name
        if self.pkcs12 is not None:
            out["pkcs12"] = self.pkcs12.file
        return out


class Hooks(Strict):
    pre: Command | None = None  # before the request (e.g. stop a service holding :80)
    post: Command | None = None  # after the attempt, whatever its outcome
    config_test: Command | None = None  # e.g. nginx -t, after the new files are live
    deploy: Command | None = None  # reload the service

    @field_validator("pre", "post", "config_test", "deploy", mode="before")
    @classmethod
    def _cmds(cls, v: Any) -> Any:
        return _command(v)


class Renewal(Strict):
    # Random spread subtracted from the computed renewal time, at most this fraction of
    # the lifetime, so a fleet issued together does not renew together.
    jitter: float = Field(default=0.02, ge=0, le=0.1)
    retry_base: Duration = dt.timedelta(minutes=5)
    retry_cap: Duration = dt.timedelta(hours=6)

    @model_validator(mode="after")
    def _order(self) -> Renewal:
        if self.retry_base <= dt.timedelta(0) or self.retry_cap < self.retry_base:
            raise ValueError("need 0 < retry_base <= retry_cap")
        return self


class Endpoint(Strict):
    host: str
    port: int = Field(ge=1, le=65535)
    sni: str | None = None
    timeout: Duration = dt.timedelta(seconds=10)  # per connection
    # How long the new certificate may take to show up after the deploy hook: a reload
    # is asynchronous (``nginx -s reload`` signals the master process and returns at
    # once; connections keep reaching the old workers until the new ones are up).
    settle: Duration = dt.timedelta(seconds=10)


class Spec(Strict):
    name: str
    issuer: Issuer
    names: tuple[NameSource, ...] = Field(min_length=1)
    subject: Subject = Subject()
    key: KeySpec = KeySpec()
    output: Output
    # The CA certificate(s) the issued chain must verify to before anything is installed.
    trust_anchor: Path
    hooks: Hooks = Hooks()
    renewal: Renewal = Renewal()
    endpoints: tuple[Endpoint, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SPEC_NAME.match(v):
            raise ValueError(f"{v!r}: use lower-case letters, digits, '.', '_' and '-'")
        return v

    @field_validator("subject")
    @classmethod
    def _cn(cls, v: Subject) -> Subject:
        if v.cn is not None:
            normalize_dns(v.cn)
        return v


def parse_spec(data: Any, source: str) -> Spec:
    if not isinstance(data, dict):
        raise config_error(f"{source}: expected a mapping at the top level")
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise config_error("; ".join(f"{source}: {explain(err, Spec)}"
                                     for err in e.errors())) from None


def parse_spec_text(text: str, source: str) -> Spec:
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise config_error(
            f"{source}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    return parse_spec(data, source)


def load_spec(path: Path) -> Spec:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise config_error(f"{path}: no such file") from None
    return parse_spec_text(text, str(path))


def load_specs(location: Path) -> list[Spec]:
    """Every spec in a directory (``*.yaml``, ``*.yml``, sorted) or one file; spec names
    must be unique."""
    if location.is_dir():
        files = sorted(p for p in location.iterdir()
                       if p.suffix in SPEC_SUFFIXES and not p.name.startswith("."))
    elif location.exists():
        files = [location]
    else:
        raise config_error(f"{location}: no such file or directory")
    specs: list[Spec] = []
    seen: dict[str, Path] = {}
    for f in files:
        spec = load_spec(f)
        if spec.name in seen:
            raise config_error(f"{f}: name: {spec.name!r} is already the name of the spec in "
                               f"{seen[spec.name]}")
        seen[spec.name] = f
        specs.append(spec)
    return specs
