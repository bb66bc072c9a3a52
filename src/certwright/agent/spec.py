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

from certwright.agent.specbase import Command as Command
from certwright.agent.specbase import command_of, exactly_one
from certwright.agent.specissuer import AcmeIssuer as AcmeIssuer
from certwright.agent.specissuer import Challenge as Challenge
from certwright.agent.specissuer import Dns01 as Dns01
from certwright.agent.specissuer import Eab as Eab
from certwright.agent.specissuer import EstIssuer as EstIssuer
from certwright.agent.specissuer import Http01 as Http01
from certwright.agent.specissuer import Issuer as Issuer
from certwright.agent.specissuer import Rfc2136 as Rfc2136
from certwright.agent.specissuer import TlsAlpn01 as TlsAlpn01
from certwright.configbase import Duration, Strict, UniqueKeyLoader, explain
from certwright.errors import config_error
from certwright.pki.names import normalize_dns

SPEC_SUFFIXES = (".yaml", ".yml")
_SPEC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


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
        return command_of(v)

    @model_validator(mode="after")
    def _one(self) -> NameSource:
        exactly_one(self, ("static", "nginx", "apache", "command", "host"), "name source")
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
        return command_of(v)


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
