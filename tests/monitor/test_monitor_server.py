"""The check-in endpoint of a real `certwright serve` at its protocol edges, with the
tests' stand-in client (tests/monitor/monitor_support.py AgentClient): a missing or wrong token
(401 with WWW-Authenticate: Bearer), another host's token (403), a body that is not JSON
(400), an empty check-in taken. Every error status of the check-in API, case by case,
is in tests/monitor/test_monitor_units.py (test_fail_checkin_api_errors). What the monitor
makes of real agents' check-ins (missing after the grace period, alerted once and
resolved once; agent-silent; stale-deployment) is tested with the real agent in
tests/monitor/test_monitor_agents.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cli import run
from tests.monitor.monitor_support import (
    AgentClient,
    Receiver,
    fast_monitor,
    receiving,
)
from tests.served import Served, serving

pytestmark = pytest.mark.peer("curl")


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("monitor-serve"),
                 lambda data: fast_monitor(data, hook.url)) as s:
        yield s


def token(s: Served, host: str) -> str:
    proc = run("monitor", "token", "add", host, "--data", str(s.data), check=True)
    return proc.stdout.strip()


def test_fail_checkin_authentication(server: Served) -> None:
    good = token(server, "auth.test")
    agent = AgentClient(server.https, server.root_pem, "auth.test", good)
    r = agent.checkin([], token="")
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    bad = agent.checkin([], token=good + "x")
    assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]
    other = AgentClient(server.https, server.root_pem, "other.test", good)
    # RFC 6750 3.1: a valid token that does not cover the request is refused (403).
    r = other.checkin([])
    assert r.status_code == 403, "a token is good for its own host only"
    assert "own host" in r.json()["error"]
    with httpx.Client(verify=agent.ctx, trust_env=False) as client:
        r = client.post(f"{server.https}/monitor/v1/checkin", content=b"{nope",
                        headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    ok = agent.checkin([])
    assert ok.status_code == 200 and ok.json()["specs"] == 0
