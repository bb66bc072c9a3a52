"""Check-ins: the agent tells the server's monitor what this host expects to hold.

After every `agent enroll` and on every `agent run` cycle (at most ``interval`` apart),
the agent POSTs one document in the monitor's schema (``certwright.monitor.checkin``,
DESIGN.md "The monitor") to ``{url}/monitor/v1/checkin`` with the host's bearer token
(`certwright monitor token add HOST` on the server): every spec, the names it derives
now, where it enrolls, what is installed, when it renews and how the last attempt went.
That is how the server knows a certificate that never appears.

A check-in never decides an enrollment: a server that is down or refuses is logged and
the next cycle tries again. The token is read from a file only its owner may read, sent
only in the Authorization header of this request, and never logged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

from certwright import __version__
from certwright.agent.core import Agent
from certwright.agent.spec import Spec
from certwright.errors import CertwrightError, ErrorKind, config_error

__all__ = ["CHECKIN_PATH", "Monitor", "report"]

log = logging.getLogger("certwright.agent")

CHECKIN_PATH = "/monitor/v1/checkin"
TIMEOUT = 15.0  # seconds for one check-in


@dataclasses.dataclass(frozen=True)
class Monitor:
    """Where and how this agent checks in (the `agent` command's --monitor-* options)."""

    url: str  # the server's HTTPS base, https://ca.example:8443
    token_file: Path
    trust_anchor: Path | None = None  # PEM the server's TLS certificate chains to
    host: str = dataclasses.field(default_factory=socket.getfqdn)
    interval: dt.timedelta = dt.timedelta(minutes=15)

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise config_error(f"--monitor-url {self.url!r}: an http(s) base URL")

    def token(self) -> str:
        """The bearer token; refused if others may read its file (it authenticates the
        host to the server)."""
        try:
            st = os.stat(self.token_file)
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise CertwrightError(ErrorKind.CONFIG, f"--monitor-token-file "
                                  f"{self.token_file}: {e.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise config_error(f"--monitor-token-file {self.token_file}: readable by "
                               "others (mode {:o}); make it 0600".format(st.st_mode & 0o777))
        if not token:
            raise config_error(f"--monitor-token-file {self.token_file} is empty")
        return token


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat() if t is not None else None


def _spec_report(agent: Agent, spec: Spec) -> dict[str, Any] | None:
    enrolled = agent.state.get(spec.name)
    plan = agent.plan(spec, enrolled, lookup=False)
    names = list(plan.derived.names) if plan.derived and plan.derived.names else (
        list(enrolled.names) if enrolled is not None else [])
    if not names:
        log.warning("check-in: %s derives no names (%s); not reported", spec.name,
                    plan.error or "empty")
        return None
    doc: dict[str, Any] = {"name": spec.name, "issuer": spec.issuer.url,
                           "protocol": spec.issuer.protocol, "profile": spec.issuer.profile,
                           "names": names}
    if enrolled is not None and enrolled.serial and enrolled.not_after is not None:
        doc["certificate"] = {"serial": enrolled.serial,
                              "not_before": _iso(enrolled.not_before),
                              "not_after": _iso(enrolled.not_after),
                              "names": list(enrolled.names)}
    if enrolled is not None and enrolled.next_renewal is not None:
        doc["renewal"] = {"next_at": _iso(enrolled.next_renewal),
                          "rule": "ari" if enrolled.ari_next_check else "lifetime"}
    attempts = agent.state.attempts(spec.name)
    if attempts:
        last = attempts[0]
        doc["last_attempt"] = {"at": _iso(last.at), "ok": last.outcome != "failed",
                               "error": last.error}
        failing = None
        for a in attempts:  # newest first: the start of the current run of failures
            if a.outcome != "failed":
                break
            failing = a.at
        doc["failing_since"] = _iso(failing)
    return doc


def report(agent: Agent, specs: list[Spec], monitor: Monitor) -> bool:
    """POST one check-in; True if the server took it. Never raises for the server's
    sake: the caller's enrollment work goes on either way."""
    import httpx  # the agent's commands that do not check in need not import it

    try:
        token = monitor.token()
    except CertwrightError as e:
        log.error("check-in not sent: %s", e)
        return False
    url = monitor.url.rstrip("/") + CHECKIN_PATH
    try:
        reports = [r for r in (_spec_report(agent, s) for s in specs) if r is not None]
        body = {"version": 1, "host": monitor.host, "agent_version": __version__,
                "sent_at": _iso(agent.clock.now()),
                "checkin_interval": max(1, int(monitor.interval.total_seconds())),
                "specs": reports}
        # An SSL context rather than a path: httpx 0.28 deprecates verify=<str>.
        verify = ssl.create_default_context(
            cafile=str(monitor.trust_anchor) if monitor.trust_anchor else None)
        with httpx.Client(verify=verify, timeout=TIMEOUT, trust_env=False) as http:
            r = http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    except (httpx.HTTPError, OSError, CertwrightError) as e:
        # OSError: an unreadable trust anchor, ssl.SSLError. Only the exception's type or
        # strerror: an httpx error's text could quote the request, and with it the token.
        why = (str(e) if isinstance(e, CertwrightError) else
               e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__)
        log.warning("check-in to %s failed: %s; trying again next cycle", url, why)
        return False
    if r.status_code != 200:
        detail = r.text.strip().splitlines()[0][:200] if r.text.strip() else ""
        log.warning("check-in to %s refused: HTTP %d %s", url, r.status_code, detail)
        return False
    log.info("checked in with %d spec(s) at %s", len(reports), url)
    return True
