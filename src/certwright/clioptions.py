"""What every ``certwright`` command group shares (the top-level commands, ``est``,
``monitor``, ``agent``): the options, so ``--data`` means the same everywhere; the table
printer; the ``--expires`` parser."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import click

from certwright.configbase import parse_duration
from certwright.errors import CertwrightError, ErrorKind

__all__ = ["DATA", "OPERATOR", "expires_at", "table"]

DATA = click.option(
    "--data", "data", type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CERTWRIGHT_DATA", "./var"),
    show_default="./var or $CERTWRIGHT_DATA", help="The CA's data directory.",
)
OPERATOR = click.option("--operator", default=lambda: os.environ.get("USER", "operator"),
                        show_default="$USER", help="Who is acting, for the audit log.")


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Columns as wide as their widest cell, two spaces apart, headers first."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for r in [list(headers), *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def expires_at(now: dt.datetime, expires: str | None) -> dt.datetime | None:
    """``now`` plus an ``--expires`` duration (``7d``, ``12h``), or None without one."""
    if expires is None:
        return None
    try:
        return now + parse_duration(expires)
    except ValueError as e:
        raise CertwrightError(ErrorKind.MALFORMED, f"--expires: {e}") from None
