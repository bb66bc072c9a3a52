"""The one list of front-ends: the only place outside the front-ends themselves that
names a protocol.

Each entry is "module:attribute" of a ``certwright.ca.frontend.FrontEnd``, imported on
first use so that reading this list costs nothing and ``ca/`` can compose the
configuration without importing any front-end at start-up. Adding a front-end is
adding its package and one line here (DESIGN.md, "adding a front-end").
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certwright.ca.frontend import FrontEnd

FRONTENDS = (
    "certwright.acme.plugin:FRONTEND",
    "certwright.est.plugin:FRONTEND",
    "certwright.monitor.plugin:FRONTEND",
)

# Issuance from the command line by an operator who can read the data directory.
LOCAL = "cli"

# The server's own requests (its HTTPS listener's certificate, ca/builtin.py): no
# front-end sends them and no configured profile may accept them.
INTERNAL = "internal"

# Protocols whose front-ends are not built yet. A profile may list them (earlier
# `certwright init`s wrote them, and those configurations keep loading); nothing answers
# them, and `serve` says so (Config.reserved_warning).
RESERVED = ("scep", "cmp")


@functools.cache
def frontends() -> tuple[FrontEnd, ...]:
    found = []
    for target in FRONTENDS:
        module, _, attr = target.partition(":")
        found.append(getattr(importlib.import_module(module), attr))
    return tuple(found)


def protocol_names() -> tuple[str, ...]:
    """Every name a profile's ``protocols`` may hold."""
    return (*(f.name for f in frontends() if f.enrolls), *RESERVED, LOCAL, INTERNAL)
