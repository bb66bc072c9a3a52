"""The monitor with the real agent (issue 6's tests): `certwright agent` checks in with a
real `certwright serve` (agent/checkin.py), which evaluates on its interval and alerts a
real webhook receiver (HMAC checked by the receiver).

- A spec whose names the profile forbids: the agent's EST enrollment is refused, it
  checks in the failure; after the grace period the server reports `missing` and the
  webhook gets exactly one alert. The spec fixed (allowed names): the agent enrolls and
  checks in the installed certificate; one resolve.
- `agent run` stopped with SIGTERM: `agent-silent`, with the host named.
- A token file others may read, or a monitor that does not answer: no check-in, a log
  line, and the enrollment succeeds.
- nginx left on the old certificate by a renewal whose reload hook was removed:
  `stale-deployment`; the hook restored, it resolves.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agent.test_agent_nginx import MAIN, SITE, Nginx, _user_directive, running
from tests.agent_support import (
    agent_env,
    assert_pair_matches,
    run_agent,
    safe_directory,
    served_serial,
    wait_served,
    write_spec,
)
from tests.cli import CERTWRIGHT, run
from tests.conftest import require_peer
from tests.monitor.monitor_support import Receiver, fast_monitor, receiving
from tests.served import Served, free_ports, openssl, serving

pytestmark = pytest.mark.peer("nginx", "curl")

PROFILE = "tls-client"  # EST with automatic approval; names under *.test and *.internal


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("monitor-agents"),
                 lambda data: fast_monitor(data, hook.url)) as s:
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
        assert finding["severity"] == "critical" and "HTTP 403" in finding["message"]
        # A second evaluator (as after a restart) sees it too, and alerts nothing again.
        check = run("monitor", "check", "--data", str(server.data), "--json")
        assert check.returncode == 1 and subject in check.stdout
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


def test_fail_checkin_never_fails_the_enrollment(server: Served) -> None:
    """A token file others may read is refused (no check-in is sent), and a monitor that
    does not answer is logged; the enrollment succeeds either way, and the token is in no
    log line."""
    with safe_directory() as root:
        host = Host(server, root, "lax1.test")
        host.spec(["lax1.test"])
        token = host.token.read_text().strip()
        host.token.chmod(0o640)
        lax = host.agent("enroll")
        assert lax.returncode == 0, lax.stdout + lax.stderr
        assert "readable by others (mode 640); make it 0600" in lax.stderr, lax.stderr
        assert "checked in" not in lax.stderr
        host.token.chmod(0o600)
        (closed,) = free_ports(1)
        options = host.options()
        options[1] = f"https://localhost:{closed}"
        down = subprocess.run(
            [CERTWRIGHT, "agent", "--specs", str(host.specs), "--state", str(host.state),
             *options, "enroll", "--force"], capture_output=True, text=True, timeout=120,
            env=agent_env(), check=False, stdin=subprocess.DEVNULL)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"check-in to https://localhost:{closed}/monitor/v1/checkin failed: " \
            "ConnectError; trying again next cycle" in down.stderr, down.stderr
        assert token not in lax.stdout + lax.stderr + down.stdout + down.stderr


# -- stale deployment: nginx keeps serving the old certificate ------------------------------

SHOP = "shop.stale.test"  # tls-client allows *.test


def test_ok_nginx_left_on_the_old_certificate_is_a_stale_deployment(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """nginx on loopback serves what the agent installs; a renewal whose deploy (reload)
    hook was removed leaves nginx on the old certificate while the store has a newer one:
    `stale-deployment`. The hook restored and the next renewal run: it resolves."""
    program = require_peer("nginx", "nginx")
    http, https = free_ports(2)
    with receiving() as hook, safe_directory() as root:
        def configure(data: Path) -> None:
            fast_monitor(data, hook.url, grace="1s", extra=f"""
  endpoints:
    - {{address: "127.0.0.1:{https}", sni: {SHOP}, names: [{SHOP}], profile: {PROFILE}}}""")

        with serving(tmp_path_factory.mktemp("monitor-nginx"), configure) as server:
            host = Host(server, root, "shop1.test")
            prefix, out, webroot = root / "nginx", root / "out", root / "www"
            for d in (prefix / "sites", prefix / "tmp", out, webroot):
                d.mkdir(parents=True, mode=0o755)
            nginx = Nginx(program, prefix, http, https, out, webroot)
            nginx.conf.write_text(MAIN.format(prefix=prefix, http=http, webroot=webroot,
                                              user=_user_directive()))
            (prefix / "sites" / "shop.conf").write_text(
                SITE.format(https=https, names=SHOP, out=out))
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", f"/CN={SHOP}", "-days", "1",
                    "-keyout", str(out / "privkey.pem"), "-out", str(out / "fullchain.pem"))
            subject = f"endpoint:127.0.0.1:{https}/{SHOP}"

            def spec(reload: bool) -> None:
                host.spec([SHOP])
                path = host.specs / "web.yaml"
                doc = yaml.safe_load(path.read_text())
                doc["output"]["fullchain"] = "fullchain.pem"
                if reload:
                    doc["hooks"] = {"config_test": nginx.args("-t", "-q"),
                                    "deploy": nginx.args("-s", "reload")}
                path.write_text(yaml.safe_dump(doc, sort_keys=False))

            with running(nginx):
                spec(reload=True)
                first = host.agent("enroll", "--force")
                assert first.returncode == 0, first.stdout + first.stderr
                served_first = assert_pair_matches(out).serial_number
                wait_served(https, SHOP, served_first)
                # Renewed with the reload hook removed: new files, nginx not told. (A second
                # apart: the store orders certificates by their issue time in seconds.)
                time.sleep(1.1)
                spec(reload=False)
                second = host.agent("enroll", "--force")
                assert second.returncode == 0, second.stdout + second.stderr
                newer = assert_pair_matches(out).serial_number
                assert newer != served_first
                assert served_serial(https, SHOP) == served_first
                events = hook.wait_for(lambda ev: ("open", "stale-deployment") in of(ev, subject))
                finding = next(e["finding"] for e in events
                               if e["finding"]["subject"] == subject
                               and e["finding"]["kind"] == "stale-deployment")
                assert format(served_first, "x") in finding["message"], finding
                # The hook restored; the next renewal reloads nginx: resolved.
                spec(reload=True)
                third = host.agent("enroll", "--force")
                assert third.returncode == 0, third.stdout + third.stderr
                wait_served(https, SHOP, assert_pair_matches(out).serial_number)
                hook.wait_for(lambda ev: ("resolved", "stale-deployment") in of(ev, subject))
                opened = [e for e in of(hook.delivered(), subject)
                          if e == ("open", "stale-deployment")]
                assert len(opened) == 1
