"""The monitor as a front-end of the seam: the agents' check-in API and the periodic
evaluation the server runs in the background."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from certwright.ca.frontend import FrontEnd, Rendered
from certwright.monitor.config import MonitorSettings, check_profiles

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from certwright.ca.service import CertificateAuthority


def _routes(ca: CertificateAuthority) -> list[BaseRoute]:
    from certwright.monitor.checkin import checkin_routes

    return list(checkin_routes(ca))


async def _evaluate_forever(ca: CertificateAuthority, data: Path) -> None:
    from certwright.monitor.engine import run_forever

    await run_forever(ca, data)


def _transport_error(status: int, detail: str) -> Rendered:
    # The check-in API's one error shape (monitor.checkin.render_error).
    return Rendered(status, json.dumps({"error": detail}).encode(), "application/json")


FRONTEND = FrontEnd(
    name="monitor",
    enrolls=False,
    routes=_routes,
    render_transport_error=_transport_error,
    metrics_prefixes=("/monitor/",),
    endpoints=frozenset({"checkin"}),
    background=_evaluate_forever,
    settings=MonitorSettings,
    check_config=check_profiles,
    cli="certwright.monitor.cli:monitor",
)
