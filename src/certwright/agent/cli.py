"""``certwright agent``: plan, enroll, status, run, adopt."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from certwright.agent import adopt as adoptlib
from certwright.agent.checkin import Monitor, report
from certwright.agent.core import Agent, Plan
from certwright.agent.daemon import Daemon
from certwright.agent.spec import Spec, load_specs
from certwright.agent.state import Enrollment, State
from certwright.clioptions import table
from certwright.clock import SystemClock
from certwright.configbase import parse_duration
from certwright.errors import CertwrightError, ErrorKind

DEFAULT_SPECS = "/etc/certwright-agent/specs.d"
DEFAULT_STATE = "/var/lib/certwright-agent"


class Context:
    def __init__(self, specs: Path, state: Path, monitor: Monitor | None = None) -> None:
        self.specs_path = specs
        self.state_path = state
        self.monitor = monitor

    def specs(self, names: tuple[str, ...] = ()) -> list[Spec]:
        specs = load_specs(self.specs_path)
        if names:
            known = {s.name: s for s in specs}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise CertwrightError(ErrorKind.NOT_FOUND, f"no spec named {unknown[0]!r} in "
                                      f"{self.specs_path}; known: {', '.join(sorted(known))}")
            return [known[n] for n in names]
        return specs

    @contextlib.contextmanager
    def agent(self) -> Iterator[Agent]:
        state = State(self.state_path)
        try:
            yield Agent(state, SystemClock())
        finally:
            state.close()


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@click.group("agent")
@click.option("--specs", type=click.Path(path_type=Path),
              default=lambda: os.environ.get("CERTWRIGHT_AGENT_SPECS", DEFAULT_SPECS),
              show_default=f"{DEFAULT_SPECS} or $CERTWRIGHT_AGENT_SPECS",
              help="A spec file or a directory of *.yaml specs.")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: os.environ.get("CERTWRIGHT_AGENT_STATE", DEFAULT_STATE),
              show_default=f"{DEFAULT_STATE} or $CERTWRIGHT_AGENT_STATE",
              help="The agent's state directory (its record of enrollments, ACME accounts).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--monitor-url", envvar="CERTWRIGHT_AGENT_MONITOR_URL", default=None,
              help="Check in with this certwright server's monitor (its HTTPS base URL) "
                   "after each enrollment and every --monitor-interval; env "
                   "CERTWRIGHT_AGENT_MONITOR_URL.")
@click.option("--monitor-token-file", envvar="CERTWRIGHT_AGENT_MONITOR_TOKEN_FILE",
              type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The host's check-in token (`certwright monitor token add HOST` on the "
                   "server), in a file only its owner can read.")
@click.option("--monitor-trust", envvar="CERTWRIGHT_AGENT_MONITOR_TRUST",
              type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM trust anchor for the server's TLS (default: the system's).")
@click.option("--monitor-host", envvar="CERTWRIGHT_AGENT_MONITOR_HOST", default=None,
              help="The name this host checks in as (default: its FQDN).")
@click.option("--monitor-interval", envvar="CERTWRIGHT_AGENT_MONITOR_INTERVAL", default="15m",
              show_default=True, help="The longest time between two check-ins.")
@click.pass_context
def agent(ctx: click.Context, specs: Path, state: Path, log_level: str,
          monitor_url: str | None, monitor_token_file: Path | None,
          monitor_trust: Path | None, monitor_host: str | None,
          monitor_interval: str) -> None:
    """The enrollment agent: gets, installs and renews this host's certificates."""
    _logging(log_level)
    monitor = None
    if monitor_url is not None:
        if monitor_token_file is None:
            raise click.BadParameter("--monitor-url needs --monitor-token-file",
                                     param_hint="--monitor-token-file")
        try:
            interval = parse_duration(monitor_interval)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--monitor-interval") from None
        extra = {"host": monitor_host} if monitor_host else {}
        monitor = Monitor(monitor_url, monitor_token_file, monitor_trust,
                          interval=interval, **extra)
    ctx.obj = Context(specs, state, monitor)


def _ts(t: dt.datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else "-"


@agent.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def plan(obj: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Dry run: the names each spec derives and where from, its files, what is due."""
    specs = obj.specs(names)
    with obj.agent() as a:
        enrolled = a.state.all()
        plans = [a.plan(s, enrolled.get(s.name), lookup=False) for s in specs]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in plans], indent=2))
        return
    for p in plans:
        _print_plan(p)


def _print_plan(p: Plan) -> None:
    s = p.spec
    click.echo(f"{s.name}: {'DUE' if p.due else 'not due'} ({p.reason})")
    click.echo(f"  issuer    {s.issuer.protocol} {s.issuer.url} ({s.issuer.validation})")
    if p.error:
        click.echo(f"  names     ERROR {p.error}")
    elif p.derived:
        for n, srcs in p.derived.names.items():
            click.echo(f"  name      {n:<40} from {'; '.join(srcs)}")
        for sk in p.derived.skipped:
            click.echo(f"  skipped   {sk.text!r:<40} from {sk.source}: {sk.reason}")
    for n in p.added:
        click.echo(f"  drift     + {n}")
    for n in p.removed:
        click.echo(f"  drift     - {n}")
    click.echo(f"  key       {s.key}{' (reused on renewal)' if s.key.reuse else ''}")
    for role, path in p.files.items():
        click.echo(f"  file      {role:<10} {path}")


@agent.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Enroll every spec (or every named one) now.")
@click.pass_obj
def enroll(obj: Context, names: tuple[str, ...], force: bool) -> None:
    """Enroll now: the named specs, or every spec that is due."""
    specs = obj.specs(names)
    failed = []
    with obj.agent() as a:
        for s in specs:
            p = a.plan(s)
            if not (names or force or p.due):
                click.echo(f"{s.name}: not due ({p.reason})")
                continue
            result = a.enroll(s, p.reason if p.due else "requested")
            if result.ok:
                click.echo(f"{s.name}: installed serial {result.serial}")
            else:
                failed.append(s.name)
                click.echo(f"{s.name}: failed: {result.error}")
        if obj.monitor is not None:
            # Every spec, not only the ones just enrolled: a check-in replaces the host's
            # previous report on the server.
            report(a, obj.specs(), obj.monitor)
    if failed:
        raise CertwrightError(ErrorKind.INTERNAL, f"enrollment failed for {', '.join(failed)}")


def _status_row(name: str, e: Enrollment | None, spec: Spec | None) -> dict[str, Any]:
    if e is None:
        assert spec is not None
        return {"name": name, "issuer": spec.issuer.url, "protocol": spec.issuer.protocol,
                "profile": spec.issuer.profile, "validation": spec.issuer.validation,
                "serial": None, "not_after": None, "next_renewal": None, "last_error": None,
                "failures": 0, "names": [], "spec_present": True}
    return {"name": name, "issuer": e.issuer, "protocol": e.protocol, "profile": e.profile,
            "validation": e.validation, "serial": e.serial,
            "not_after": e.not_after.isoformat() if e.not_after else None,
            "next_renewal": e.next_renewal.isoformat() if e.next_renewal else None,
            "retry_at": e.retry_at.isoformat() if e.retry_at else None,
            "last_error": e.last_error, "failures": e.failures, "names": list(e.names),
            "account": e.account, "spec_present": spec is not None}


@agent.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """What the agent holds: one line per spec, from its record."""
    try:
        specs = {s.name: s for s in obj.specs()}
    except CertwrightError as e:
        if e.kind is not ErrorKind.CONFIG:
            raise
        click.echo(f"certwright: warning: {e}", err=True)
        specs = {}
    state = State(obj.state_path)
    try:
        enrolled = state.all()
    finally:
        state.close()
    rows = [_status_row(n, enrolled.get(n), specs.get(n))
            for n in sorted(set(specs) | set(enrolled))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table([[r["name"], r["issuer"], r["protocol"], r["profile"] or "-", r["validation"],
             r["serial"] or "-", _ts(_dt(r["not_after"])), _ts(_dt(r["next_renewal"])),
             (r["last_error"] or "-")[:80]] for r in rows],
           ["NAME", "ISSUER", "PROTOCOL", "PROFILE", "VALIDATION", "SERIAL", "NOT AFTER",
            "NEXT RENEWAL", "LAST ERROR"])


def _dt(s: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(s) if s else None


@agent.command()
@click.option("--check-interval", default="1h", show_default=True,
              help="How often to re-derive names (drift) when nothing else is due.")
@click.pass_obj
def run(obj: Context, check_interval: str) -> None:
    """Run as a daemon: renew what is due; SIGHUP re-reads specs, SIGTERM stops."""
    try:
        interval = parse_duration(check_interval)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--check-interval") from None
    with obj.agent() as a:
        checkin = None
        if obj.monitor is not None:
            link = obj.monitor

            def checkin(specs: list[Spec]) -> bool:
                return report(a, specs, link)

        code = Daemon(obj.specs, a, a.clock, check_interval=interval, checkin=checkin,
                      checkin_interval=(obj.monitor.interval if obj.monitor is not None
                                        else dt.timedelta(minutes=15))).run()
    sys.exit(code)


@agent.command()
@click.argument("certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "keyfile", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The new spec's name.")
@click.option("--trust-anchor", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The CA certificate its chain must verify to.")
@click.option("--acme-directory", help="Renew from this ACME directory URL.")
@click.option("--http01-standalone", metavar="HOST:PORT")
@click.option("--tlsalpn01-standalone", metavar="HOST:PORT")
@click.option("--webroot", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dns01-hook", metavar="PROGRAM")
@click.option("--est-url", help="Renew from this EST server (base URL).")
@click.option("--est-label")
@click.option("--tls-trust", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate(s) for the issuer's own TLS.")
@click.option("--print", "print_only", is_flag=True,
              help="Print the spec instead of writing it into the specs directory.")
@click.pass_obj
def adopt(obj: Context, certfile: Path, keyfile: Path, name: str, trust_anchor: Path,
          acme_directory: str | None, http01_standalone: str | None,
          tlsalpn01_standalone: str | None, webroot: Path | None,
          dns01_hook: str | None, est_url: str | None, est_label: str | None,
          tls_trust: Path | None, print_only: bool) -> None:
    """Turn a certificate installed by hand into a spec that the agent renews (and record it
    as enrolled, unless --print)."""
    issuer: dict[str, Any] = {}
    if acme_directory:
        if http01_standalone:
            challenge: dict[str, Any] = {"http-01": {"standalone": http01_standalone}}
        elif tlsalpn01_standalone:
            challenge = {"tls-alpn-01": {"standalone": tlsalpn01_standalone}}
        elif webroot:
            challenge = {"http-01": {"webroot": str(webroot.absolute())}}
        elif dns01_hook:
            challenge = {"dns-01": {"hook": [dns01_hook]}}
        else:
            raise click.UsageError("--acme-directory needs --http01-standalone, "
                                   "--tlsalpn01-standalone, --webroot or --dns01-hook")
        issuer["acme"] = {"directory": acme_directory, "challenge": challenge}
        if tls_trust:
            issuer["acme"]["tls_trust"] = str(tls_trust.absolute())
    elif est_url:
        issuer["est"] = {"url": est_url}
        if est_label:
            issuer["est"]["label"] = est_label
        if tls_trust:
            issuer["est"]["tls_trust"] = str(tls_trust.absolute())
    target = obj.specs_path / f"{name}.yaml"
    if not print_only:
        if not obj.specs_path.is_dir():
            raise CertwrightError(ErrorKind.CONFIG, f"{obj.specs_path}: not a directory of "
                                  "specs (use --print to see the spec)")
        if target.exists():
            raise CertwrightError(ErrorKind.CONFLICT, f"{target} already exists")
    state = State(obj.state_path)
    try:
        _, doc = adoptlib.adopt(certfile, keyfile, name=name, issuer=issuer,
                                trust_anchor=trust_anchor, state=state,
                                now=SystemClock().now(),
                                rng=random.Random(),  # noqa: S311 (jitter)
                                record=not print_only)
    finally:
        state.close()
    text = yaml.safe_dump(doc, sort_keys=False)
    if print_only:
        click.echo(text, nl=False)
    else:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"# adopted from {certfile.absolute()} by certwright agent adopt\n" + text)
        click.echo(f"{name}: spec written to {target}")
