"""Names from the service's real configuration, each remembering where it came from.

Sources: a static list, the ``server_name``s of an nginx configuration (parsed with
crossplane, NGINX's own parser, following ``include``), the ``ServerName`` and
``ServerAlias`` of an Apache configuration (following ``Include``), the output of a
command, and the host's FQDN and addresses. The results are normalized with
``certwright.pki.names`` and de-duplicated; what cannot go into a certificate (nginx's
``_`` catch-all, regular expressions, ``www.example.*``) is listed as skipped, with the
reason, instead of failing the spec.
"""

from __future__ import annotations

import dataclasses
import glob
import ipaddress
import os
import shlex
import socket
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import crossplane  # type: ignore[import-untyped]

from certwright.agent.spec import Command, HostNames, NameSource
from certwright.errors import CertwrightError, config_error
from certwright.pki.names import normalize_dns

MAX_COMMAND_OUTPUT = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Skipped:
    text: str
    source: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Derived:
    """The names a spec derives: ``dns:a.example`` / ``ip:10.0.0.1`` in first-seen order,
    each with every place it was found."""

    names: dict[str, tuple[str, ...]]
    skipped: tuple[Skipped, ...] = ()

    @property
    def values(self) -> list[str]:
        return list(self.names)

    def dns(self) -> list[str]:
        return [n[4:] for n in self.names if n.startswith("dns:")]

    def ips(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address(n[3:]) for n in self.names if n.startswith("ip:")]


def canonical(text: str) -> str:
    """``dns:<A-label, lower case>`` or ``ip:<address>``; raises CertwrightError."""
    t = text.strip()
    if t.startswith("ip:"):
        return f"ip:{ipaddress.ip_address(t[3:].strip('[]'))}"
    if t.startswith("dns:"):
        t = t[4:]
    try:
        return f"ip:{ipaddress.ip_address(t.strip('[]'))}"
    except ValueError:
        pass
    return f"dns:{normalize_dns(t)}"


class _Collector:
    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.skipped: list[Skipped] = []

    def add(self, text: str, source: str) -> None:
        try:
            name = canonical(text)
        except (CertwrightError, ValueError) as e:
            self.skipped.append(Skipped(text, source, str(e)))
            return
        where = self.names.setdefault(name, [])
        if source not in where:
            where.append(source)

    def skip(self, text: str, source: str, reason: str) -> None:
        self.skipped.append(Skipped(text, source, reason))


HostInfo = Callable[[], tuple[str, list[str]]]


def system_host() -> tuple[str, list[str]]:
    """The host's FQDN and its addresses (as the resolver gives them for that FQDN),
    without loopback and link-local ones."""
    fqdn = socket.getfqdn()
    addrs: list[str] = []
    try:
        infos = socket.getaddrinfo(fqdn, None, proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not (addr.is_loopback or addr.is_link_local) and str(addr) not in addrs:
            addrs.append(str(addr))
    return fqdn, addrs


def derive(sources: Iterable[NameSource], *, host: HostInfo = system_host,
           base: Path | None = None) -> Derived:
    """Every name the sources give. Configuration files that cannot be read or parsed
    raise CertwrightError (CONFIG) naming the file: a spec whose names cannot be known
    must not enroll for fewer names."""
    c = _Collector()
    for src in sources:
        if src.static is not None:
            for n in src.static:
                c.add(n, "static")
        elif src.nginx is not None:
            _nginx(_resolve(src.nginx, base), c, host)
        elif src.apache is not None:
            _apache(_resolve(src.apache, base), c)
        elif src.command is not None:
            _command(src.command, c)
        elif src.host is not None:
            _host(src.host, c, host)
    return Derived({k: tuple(v) for k, v in c.names.items()}, tuple(c.skipped))


def _resolve(p: Path, base: Path | None) -> Path:
    return p if p.is_absolute() or base is None else base / p


# -- nginx ----------------------------------------------------------------------------------


def _nginx(path: Path, c: _Collector, host: HostInfo) -> None:
    if not path.is_file():
        raise config_error(f"nginx configuration {path}: no such file")
    payload = crossplane.parse(str(path), check_ctx=False, check_args=False, comments=False)
    errors = payload.get("errors") or []
    if errors:
        e = errors[0]
        raise config_error(f"nginx configuration {e.get('file')}:{e.get('line')}: "
                           f"{e.get('error')}")
    for conf in payload["config"]:
        _nginx_block(conf["parsed"], conf["file"], c, host)


def _nginx_block(block: list[dict[str, Any]], file: str, c: _Collector, host: HostInfo) -> None:
    for d in block:
        if d["directive"] == "server_name":
            where = f"nginx {file}:{d['line']}"
            for arg in d["args"]:
                _nginx_name(arg, where, c, host)
        if "block" in d:
            _nginx_block(d["block"], file, c, host)


def _nginx_name(arg: str, where: str, c: _Collector, host: HostInfo) -> None:
    # https://nginx.org/en/docs/http/server_names.html
    if arg in ("", "_"):
        c.skip(arg, where, "a catch-all, not a name")
    elif arg.startswith("~"):
        c.skip(arg, where, "a regular expression: list the names it should match statically")
    elif arg == "$hostname":
        c.add(host()[0], where)
    elif arg.startswith("."):
        # ".example.org" is nginx's shorthand for "example.org" and "*.example.org".
        c.add(arg[1:], where)
        c.add("*" + arg, where)
    elif arg.endswith(".*") or "*" in arg[1:]:
        c.skip(arg, where, "a trailing or inner wildcard cannot be put in a certificate")
    else:
        c.add(arg, where)


# -- Apache ---------------------------------------------------------------------------------

_APACHE_MAX_FILES = 1000


def _apache_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Logical lines (continuations joined), without comments."""
    pending = ""
    start = 0
    for i, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.rstrip()
        if not pending:
            start = i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full and not full.startswith("#"):
            yield start, full


def _apache(path: Path, c: _Collector) -> None:
    if not path.is_file():
        raise config_error(f"Apache configuration {path}: no such file")
    server_root = path.parent
    seen: set[Path] = set()

    def walk(p: Path) -> None:
        real = p.resolve()
        if real in seen:
            return
        if len(seen) >= _APACHE_MAX_FILES:
            raise config_error(f"Apache configuration {path}: more than {_APACHE_MAX_FILES} "
                               "included files")
        seen.add(real)
        nonlocal server_root
        try:
            lines = list(_apache_lines(p))
        except OSError as e:
            raise config_error(f"Apache configuration {p}: {e.strerror}") from None
        for lineno, line in lines:
            try:
                words = shlex.split(line, comments=False, posix=True)
            except ValueError as e:
                raise config_error(f"Apache configuration {p}:{lineno}: {e}") from None
            if not words:
                continue
            directive = words[0].lower()
            where = f"apache {p}:{lineno}"
            if directive == "serverroot" and len(words) > 1:
                server_root = Path(words[1])
            elif directive in ("include", "includeoptional") and len(words) > 1:
                pattern = words[1]
                if not os.path.isabs(pattern):
                    pattern = str(server_root / pattern)
                matches = sorted(glob.glob(pattern))
                if not matches and directive == "include" and not glob.has_magic(pattern):
                    raise config_error(f"{where}: Include {words[1]}: no such file")
                for m in matches:
                    mp = Path(m)
                    if mp.is_dir():
                        for f in sorted(mp.iterdir()):
                            if f.is_file():
                                walk(f)
                    else:
                        walk(mp)
            elif directive == "servername" and len(words) > 1:
                c.add(_apache_host(words[1]), where)
            elif directive == "serveralias":
                for w in words[1:]:
                    if "?" in w or "*" in w[1:] or (w.startswith("*") and not w.startswith("*.")):
                        c.skip(w, where, "a pattern other than a leading *. label")
                    else:
                        c.add(w, where)

    walk(path)


def _apache_host(value: str) -> str:
    """``ServerName [scheme://]fully-qualified-domain-name[:port]``."""
    v = value.split("://", 1)[-1]
    if v.startswith("["):
        return v[1:v.index("]")] if "]" in v else v
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


# -- command and host -----------------------------------------------------------------------


def _command(cmd: Command, c: _Collector) -> None:
    where = "command " + " ".join(shlex.quote(a) for a in cmd.run)
    try:
        proc = subprocess.run(list(cmd.run), capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=cmd.timeout.total_seconds(), check=False)
    except subprocess.TimeoutExpired:
        raise config_error(f"{where}: no answer within {cmd.timeout.total_seconds():g} s"
                           ) from None
    except OSError as e:
        raise config_error(f"{where}: {e.strerror}") from None
    if proc.returncode != 0:
        raise config_error(f"{where}: exit code {proc.returncode}")
    if len(proc.stdout) > MAX_COMMAND_OUTPUT:
        raise config_error(f"{where}: more than {MAX_COMMAND_OUTPUT} bytes of output")
    for word in proc.stdout.decode(errors="replace").split():
        c.add(word, where)


def _host(spec: HostNames, c: _Collector, host: HostInfo) -> None:
    fqdn, addrs = host()
    if spec.fqdn:
        c.add(fqdn, "host fqdn")
    if spec.ips:
        for a in addrs:
            c.add(a, "host address")
