"""The monitor in a real `certwright serve`: agents check in over HTTPS with their
tokens, the server evaluates on its interval and alerts a real webhook receiver (HMAC
checked): a spec whose names the profile forbids is `missing` after the grace period,
alerted once, and resolved once when the spec is fixed; an agent that stops checking in
is `agent-silent`, with its host named."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from .cli import run
from .helpers import csr_pem
from .monitor_support import (
    AgentClient,
    Receiver,
    add_monitor_config,
    receiving,
    spec_report,
    write_secret,
)
from .served import Served, serving


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[Served]:
    def configure(data: Path) -> None:
        add_monitor_config(data, f"""
monitor:
  interval: 1s
  grace: 2s
  agents: {{interval: 1h, grace: 1s}}
  alerts:
    webhook: {{url: "{hook.url}", secret_file: {write_secret(data)}, backoff: 1s,
               attempts: 2}}
    reminder: 1d
""")

    with serving(tmp_path_factory.mktemp("monitor-serve"), configure) as s:
        yield s


def token(s: Served, host: str) -> str:
    proc = run("monitor", "token", "add", host, "--data", str(s.data), check=True)
    return proc.stdout.strip()


def of(events: list[dict[str, Any]], subject: str) -> list[tuple[str, str]]:
    return [(e["event"], e["finding"]["kind"]) for e in events
            if e["finding"]["subject"] == subject]


def test_fail_checkin_authentication(server: Served) -> None:
    good = token(server, "auth.test")
    agent = AgentClient(server.https, server.root_pem, "auth.test", good)
    r = agent.checkin([], token="")
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert agent.checkin([], token=good + "x").status_code == 401
    other = AgentClient(server.https, server.root_pem, "other.test", good)
    assert other.checkin([]).status_code == 401, "a token is good for its own host only"
    with httpx.Client(verify=agent.ctx, trust_env=False) as client:
        r = client.post(f"{server.https}/monitor/v1/checkin", content=b"{nope",
                        headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    ok = agent.checkin([])
    assert ok.status_code == 200 and ok.json()["specs"] == 0


def test_ok_forbidden_names_missing_once_then_resolved_once(server: Served, hook: Receiver,
                                                            tmp_path: Path) -> None:
    host = "web1.test"
    agent = AgentClient(server.https, server.root_pem, host, token(server, host))
    subject = f"agent:{host}/web"
    # The agent's enrollment is refused: the profile does not allow example.com names.
    refused = run("issue", "--data", str(server.data), "--csr", "-",
                  input=csr_pem(["web1.example.com"]))
    assert refused.returncode == 1
    error = refused.stderr.strip().removeprefix("certwright: error: ")
    assert agent.checkin([spec_report("web", ["web1.example.com"], error=error)]
                         ).status_code == 200
    events = hook.wait_for(lambda ev: of(ev, subject) != [])
    assert of(events, subject) == [("open", "missing")]
    finding = next(e["finding"] for e in events if e["finding"]["subject"] == subject)
    assert finding["severity"] == "critical" and finding["host"] == host
    assert "web1.example.com" in finding["message"] and error in finding["message"]

    # More evaluations, and a second evaluator (as after a restart): no second alert.
    check = run("monitor", "check", "--data", str(server.data), "--json")
    assert check.returncode == 1 and subject in check.stdout
    time.sleep(2.5)
    assert of(hook.delivered(), subject) == [("open", "missing")]

    # The spec is fixed: allowed names, enrolled, installed, reported.
    out = tmp_path / "web.pem"
    run("issue", "--data", str(server.data), "--csr", "-", "--out", str(out),
        input=csr_pem([host]), check=True)
    cert = x509.load_pem_x509_certificates(out.read_bytes())[0]
    assert agent.checkin([spec_report("web", [host], cert=cert)]).status_code == 200
    hook.wait_for(lambda ev: ("resolved", "missing") in of(ev, subject))
    time.sleep(2.5)
    assert of(hook.delivered(), subject) == [("open", "missing"), ("resolved", "missing")]


def test_ok_agent_silent_names_the_host(server: Served, hook: Receiver) -> None:
    host = "quiet.test"
    agent = AgentClient(server.https, server.root_pem, host, token(server, host))
    assert agent.checkin([], interval=1).status_code == 200
    # Check-ins stop: after its interval (1 s) and the grace (1 s) the host is silent.
    events = hook.wait_for(lambda ev: of(ev, f"agent:{host}") != [])
    finding = next(e["finding"] for e in events if e["finding"]["subject"] == f"agent:{host}")
    assert finding["kind"] == "agent-silent" and finding["host"] == host
    assert f"the agent on {host} has not checked in since" in finding["message"]
    assert agent.checkin([], interval=3600).status_code == 200
    hook.wait_for(lambda ev: ("resolved", "agent-silent") in of(ev, f"agent:{host}"))
