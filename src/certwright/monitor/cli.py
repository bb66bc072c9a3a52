"""``certwright monitor``: evaluate now; check-in tokens for agents."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from certwright.ca import datadir
from certwright.clioptions import DATA, OPERATOR, table
from certwright.model.monitor import SEVERITIES, severity_rank
from certwright.monitor.engine import Monitor
from certwright.monitor.storage import storage_of
from certwright.monitor.tokens import Tokens

__all__ = ["monitor"]


def _ts(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


@click.group()
def monitor() -> None:
    """The monitor: expected certificates, findings, alerts."""


@monitor.command("check")
@DATA
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="warning",
              show_default=True, help="Exit 1 when a finding this severe or worse is open.")
@click.option("--no-alerts", is_flag=True,
              help="Record findings but send nothing (the server's loop will).")
def check(data: Path, as_json: bool, fail_on: str, no_alerts: bool) -> None:
    """Evaluate every expectation now, record the findings, send the alerts due, and
    print the open findings. Exit 0 when none at or above --fail-on is open, else 1."""
    with datadir.opened(data) as ca:
        report = Monitor.for_ca(ca, data).evaluate(alert=not no_alerts)
    failing = report.worst() >= severity_rank(fail_on)
    if as_json:
        click.echo(json.dumps({
            "evaluated_at": _ts(report.at), "fail_on": fail_on, "failing": failing,
            "findings": [f.as_json() for f in report.open],
            "alerts_sent": [{"event": e.event, "finding": e.finding.id} for e in report.sent],
            "alert_errors": report.errors,
        }, indent=2))
    else:
        rows = [[f.severity, f.kind, f.host or "-", _ts(f.since), f.message]
                for f in sorted(report.open, key=lambda f: (-severity_rank(f.severity),
                                                            f.kind, f.subject))]
        if rows:
            table(rows, ["SEVERITY", "KIND", "HOST", "SINCE", "FINDING"])
        else:
            click.echo("no open findings")
        for error in report.errors:
            click.echo(f"certwright: warning: {error}", err=True)
    sys.exit(1 if failing else 0)


@monitor.group("token")
def token() -> None:
    """Bearer tokens agents check in with, one per host."""


@token.command("add")
@DATA
@click.argument("host")
@click.option("--replace", is_flag=True, help="Replace the host's existing token.")
@OPERATOR
def token_add(data: Path, host: str, replace: bool, operator: str) -> None:
    """Print a new check-in token for HOST (shown once; only its hash is kept)."""
    with datadir.opened(data) as ca:
        secret = Tokens(storage_of(ca)).add(host.lower(), actor=operator, replace=replace)
    click.echo(secret)


@token.command("list")
@DATA
def token_list(data: Path) -> None:
    """Hosts that have a token."""
    with datadir.opened(data) as ca:
        for host, created in Tokens(storage_of(ca)).hosts():
            click.echo(f"{host}  {_ts(created)}")


@token.command("remove")
@DATA
@click.argument("host")
@OPERATOR
def token_remove(data: Path, host: str, operator: str) -> None:
    """Remove HOST's token: its agent can no longer check in."""
    with datadir.opened(data) as ca:
        Tokens(storage_of(ca)).remove(host.lower(), actor=operator)
    click.echo(f"removed the token of {host}")
