"""The ``certwright`` command.

Every failure prints one line, ``certwright: error: ...``, and exits non-zero; set
CERTWRIGHT_DEBUG=1 to see a traceback for an unexpected error.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import click

from certwright.errors import CertwrightError, ErrorKind

EXIT_ERROR = 1
EXIT_PENDING = 3


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"certwright: error: {message}", err=True)
    sys.exit(code)


class Group(click.Group):
    """Turns every error into one line and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CertwrightError as e:
            fail(str(e), 2 if e.kind is ErrorKind.CONFIG else EXIT_ERROR)
        except BrokenPipeError:
            # The reader went away (`certwright certs list | head`): stop quietly, as
            # Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except OSError as e:
            fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as e:
            if os.environ.get("CERTWRIGHT_DEBUG"):
                raise
            fail(f"internal error ({type(e).__name__}): {e}; set CERTWRIGHT_DEBUG=1 for details",
                 70)


# Each command is imported when it runs (or when --help lists them): `certwright agent`
# loads the agent alone, never the server side (issue 10; bench/README "agent --help").
COMMANDS = {
    "init": "certwright.commands:init",
    "serve": "certwright.commands:serve",
    "db": "certwright.commands:db",
    "issue": "certwright.commands:issue",
    "requests": "certwright.commands:requests",
    "certs": "certwright.commands:certs",
    "crl": "certwright.commands:crl",
    "audit": "certwright.commands:audit",
    "agent": "certwright.agent.cli:agent",
}


def _commands() -> dict[str, str]:
    """The CA's commands, the agent, and each front-end's group from the registry."""
    from certwright import registry

    found = dict(COMMANDS)
    for frontend in registry.frontends():
        if frontend.cli:
            found[frontend.name] = frontend.cli
    return found


class LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name) or _commands().get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="certwright")
def main() -> None:
    """certwright: an issuing CA/RA for ACME and EST, an agent and a monitor."""




if __name__ == "__main__":
    main()
