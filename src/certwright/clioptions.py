"""Options every ``certwright`` command group shares (the top-level commands, ``est``,
``monitor``): one definition, so ``--data`` means the same everywhere."""

from __future__ import annotations

import os
from pathlib import Path

import click

__all__ = ["DATA", "OPERATOR"]

DATA = click.option(
    "--data", "data", type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CERTWRIGHT_DATA", "./var"),
    show_default="./var or $CERTWRIGHT_DATA", help="The CA's data directory.",
)
OPERATOR = click.option("--operator", default=lambda: os.environ.get("USER", "operator"),
                        show_default="$USER", help="Who is acting, for the audit log.")
