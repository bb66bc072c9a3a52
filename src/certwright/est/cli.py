"""``certwright est``: EST bootstrap credentials."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from certwright.ca import datadir
from certwright.clioptions import DATA, OPERATOR, expires_at, table
from certwright.errors import CertwrightError, ErrorKind
from certwright.est import config as estconfig
from certwright.est.ports import PROTOCOL
from certwright.model.credentials import Credential

__all__ = ["est"]


@click.group()
def est() -> None:
    """The EST front-end (RFC 7030)."""


@est.group("credential")
def credential() -> None:
    """HTTP Basic bootstrap credentials, each bound to one profile."""


def _ts(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _state(c: Credential) -> str:
    if c.spent():
        return "used"
    return "one-time" if c.one_time else "reusable"


@credential.command("add")
@DATA
@click.argument("name")
@click.option("--profile", required=True, help="The profile the credential enrolls in.")
@click.option("--one-time", is_flag=True, help="Good for one request (one certificate).")
@click.option("--expires", default=None, help="Lifetime, e.g. 7d or 12h (default: none).")
@OPERATOR
def credential_add(data: Path, name: str, profile: str, one_time: bool, expires: str | None,
                   operator: str) -> None:
    """Create credential NAME for PROFILE and print its password, once.

    Only a salted hash of the password is kept. Clients send it with HTTP Basic, e.g.
    curl --user NAME:PASSWORD.
    """
    with datadir.opened(data) as ca:
        p = ca.config.profile(profile)
        if PROTOCOL not in p.protocols:
            raise CertwrightError(ErrorKind.MALFORMED,
                                  f"profile {profile!r} does not accept EST requests")
        if not estconfig.profile_settings(p).basic_auth:
            raise CertwrightError(ErrorKind.MALFORMED,
                                  f"profile {profile!r} does not accept EST credentials "
                                  "(est.basic_auth is false)")
        until = expires_at(ca.clock.now(), expires)
        cred, password = ca.credentials(PROTOCOL).create(
            name, profile, actor=operator, one_time=one_time, expires_at=until)
        label = estconfig.label(ca.config, profile)
    click.echo(f"name: {cred.name}")
    click.echo(f"password: {password}")
    click.echo(f"profile: {profile} (https://HOST:PORT/.well-known/est/{label}/ or "
               "/.well-known/est/)")
    click.echo("the password is shown only now; certwright keeps a salted hash of it", err=True)


@credential.command("list")
@DATA
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def credential_list(data: Path, as_json: bool) -> None:
    """List credentials (never their passwords)."""
    with datadir.opened(data) as ca:
        creds = ca.credentials(PROTOCOL).all()
        now = ca.clock.now()
    if as_json:
        for c in creds:
            click.echo(json.dumps({
                "name": c.name, "profile": c.profile, "one_time": c.one_time,
                "used_at": _ts(c.used_at) if c.used_at else None,
                "expires_at": _ts(c.expires_at) if c.expires_at else None,
                "expired": c.expired(now), "created_at": _ts(c.created_at)}))
        return
    rows = [[c.name, c.profile, _state(c), _ts(c.expires_at) + (" (expired)"
                                                                 if c.expired(now) else ""),
             _ts(c.created_at)] for c in creds]
    table(rows, ["NAME", "PROFILE", "KIND", "EXPIRES", "CREATED"])


@credential.command("remove")
@DATA
@click.argument("name")
@OPERATOR
def credential_remove(data: Path, name: str, operator: str) -> None:
    """Remove credential NAME: it authenticates nothing from now on."""
    with datadir.opened(data) as ca:
        ca.credentials(PROTOCOL).remove(name, actor=operator)
    click.echo(f"removed EST credential {name}")
