"""The monitor with the real agent (issue 6's tests): `certwright agent` checks in with a
real `certwright serve` (agent/checkin.py), which evaluates on its interval and alerts a
real webhook receiver (HMAC checked by the receiver).

- A spec whose names the profile forbids: the agent's EST enrollment is refused, it
  checks in the failure; after the grace period the server reports `missing` and the
  webhook gets exactly one alert. The spec fixed (allowed names): the agent enrolls and
  checks in the installed certificate; one resolve.
- `agent run` stopped with SIGTERM: `agent-silent`, with the host named.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .agent_support import agent_env, assert_pair_matches, run_agent, safe_directory, write_spec
from .cli import CERTWRIGHT, run
from .monitor_support import Receiver, add_monitor_config, receiving, write_secret
from .served import Served, serving

PROFILE = "tls-client"  # EST with automatic approval; names under *.test and *.internal


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

    with serving(tmp_path_factory.mktemp("monitor-agents"), configure) as s:
        yield s


def of(events: list[dict[str, Any]], subject: str) -> list[tuple[str, str]]:
    return [(e["event"], e["finding"]["kind"]) for e in events
            if e["finding"]["subject"] == subject]


class Host:
    """One host: its check-in token (0600), an EST credential, specs and state."""

    def __init__(self, server: Served, root: Path, name: str) -> None:
        self.server, self.root, self.name = server, root, name
        token = run("monitor", "token", "add", name, "--data", str(server.data),
                    check=True).stdout.strip()
        self.token = root / "checkin.token"
        self.token.write_text(token + "\n")
        self.token.chmod(0o600)
        made = run("est", "credential", "add", name, "--profile", PROFILE, "--data",
                   str(server.data), check=True)
        self.password = root / "est.password"
        self.password.write_text(next(line.split()[-1] for line in made.stdout.splitlines()
                                      if "password" in line.lower()) + "\n")
        self.password.chmod(0o600)
        self.specs, self.state = root / "specs", root / "state"
        self.specs.mkdir()

    def spec(self, names: list[str]) -> Path:
        out = self.root / "out"
        out.mkdir(exist_ok=True)
        return write_spec(self.specs, {
            "name": "web",
            "issuer": {"est": {"url": self.server.https, "label": PROFILE,
                               "username": self.name, "password_file": str(self.password),
                               "tls_trust": str(self.server.root_pem)}},
            "names": [{"static": names}],
            "output": {"directory": str(out)},
            "trust_anchor": str(self.server.root_pem),
        })

    def options(self) -> list[str]:
        return ["--monitor-url", self.server.https, "--monitor-token-file", str(self.token),
                "--monitor-trust", str(self.server.root_pem), "--monitor-host", self.name]

    def agent(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CERTWRIGHT, "agent", "--specs", str(self.specs), "--state",
                               str(self.state), *self.options(), *args],
                              capture_output=True, text=True, timeout=120,
                              env=agent_env(), check=False, stdin=subprocess.DEVNULL)


def test_ok_forbidden_names_missing_once_then_resolved_once(server: Served, hook: Receiver
                                                            ) -> None:
    with safe_directory() as root:
        host = Host(server, root, "web1.test")
        subject = f"agent:{host.name}/web"
        host.spec(["web1.example.com"])  # tls-client allows *.test, not example.com
        refused = host.agent("enroll")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "HTTP 403" in refused.stdout, refused.stdout
        assert "checked in with 1 spec(s)" in refused.stderr, refused.stderr
        events = hook.wait_for(lambda ev: of(ev, subject) != [])
        assert of(events, subject) == [("open", "missing")]
        finding = next(e["finding"] for e in events if e["finding"]["subject"] == subject)
        assert finding["host"] == host.name and "web1.example.com" in finding["message"]
        time.sleep(2.5)  # more evaluations: no second alert
        assert of(hook.delivered(), subject) == [("open", "missing")]

        host.spec(["web1.test"])  # the spec fixed
        fixed = host.agent("enroll", "--force")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert_pair_matches(root / "out")
        hook.wait_for(lambda ev: ("resolved", "missing") in of(ev, subject))
        time.sleep(2.5)
        assert of(hook.delivered(), subject) == [("open", "missing"), ("resolved", "missing")]
        # The token never reached a log line.
        token = host.token.read_text().strip()
        assert token not in refused.stderr + refused.stdout + fixed.stderr + fixed.stdout


def test_ok_stopped_agent_is_silent_with_its_host_named(server: Served, hook: Receiver
                                                        ) -> None:
    with safe_directory() as root:
        host = Host(server, root, "quiet1.test")
        subject = f"agent:{host.name}"
        host.spec(["quiet1.test"])
        log = root / "agent.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                [CERTWRIGHT, "agent", "--specs", str(host.specs), "--state", str(host.state),
                 *host.options(), "--monitor-interval", "1s", "run"],
                stdout=err, stderr=subprocess.STDOUT, env=agent_env(),
                stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while log.read_text().count("checked in with") < 2:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert of(hook.delivered(), subject) == [], "silent while it checks in"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
        events = hook.wait_for(lambda ev: of(ev, subject) != [])
        finding = next(e["finding"] for e in events if e["finding"]["subject"] == subject)
        assert finding["kind"] == "agent-silent" and finding["host"] == host.name
        assert f"the agent on {host.name} has not checked in since" in finding["message"]
        # Back: one check-in resolves it.
        assert run_agent(host.specs, host.state, *host.options(), "status").returncode == 0
        again = host.agent("enroll")
        assert again.returncode == 0, again.stdout + again.stderr
        hook.wait_for(lambda ev: ("resolved", "agent-silent") in of(ev, subject))
