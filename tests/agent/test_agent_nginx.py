"""The agent deploying to a real nginx (Debian package ``nginx``) on loopback.

nginx runs in the foreground with its own configuration, prefix, pid and error log, as
whoever runs the tests. Its configuration is where the names come from (crossplane,
through an ``include``); it also answers http-01 from the webroot the agent writes into.
The spec's config test is ``nginx -t``, its deploy hook ``nginx -s reload``, and the
endpoint check connects to nginx's TLS port. The certificates come from a real
``certwright serve`` (ACME), which resolves every name to 127.0.0.1 through
pebble-challtestsrv and fetches http-01 from nginx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import json
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.agent_support import (
    agent_env,
    assert_pair_matches,
    configure_acme,
    run_agent,
    safe_directory,
    served_serial,
    status,
    wait_served,
    write_spec,
)
from tests.challtestsrv import challtestsrv
from tests.cli import CERTWRIGHT
from tests.conftest import require_peer
from tests.served import Served, free_ports, openssl, serving

pytestmark = pytest.mark.peer("nginx", "pebble-challtestsrv", "curl")


# Started as root, nginx would run its workers as "nobody", who cannot read a test
# directory under /root (where the tests put it when the checkout is below /tmp): the
# workers run as the user running the tests.
def _user_directive() -> str:
    if os.geteuid() != 0:
        return ""  # nginx ignores "user" when it is not root: workers run as we do
    return f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"


MAIN = """\
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{http};
        server_name _;
        location /.well-known/acme-challenge/ {{ root {webroot}; }}
    }}
    include {prefix}/sites/*.conf;
}}
"""
SITE = """\
server {{
    listen 127.0.0.1:{https} ssl;
    server_name {names};
    ssl_certificate {out}/fullchain.pem;
    ssl_certificate_key {out}/privkey.pem;
}}
"""


@dataclasses.dataclass
class Nginx:
    program: str
    prefix: Path
    http: int
    https: int
    out: Path
    webroot: Path

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def args(self, *extra: str) -> list[str]:
        return [self.program, *extra, "-p", str(self.prefix), "-e",
                str(self.prefix / "error.log"), "-c", str(self.conf)]

    def site(self, names: str) -> None:
        (self.prefix / "sites" / "shop.conf").write_text(
            SITE.format(https=self.https, names=names, out=self.out))



@contextlib.contextmanager
def running(nginx: Nginx) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground; stopped (SIGQUIT, a graceful stop) at the end."""
    check = subprocess.run(nginx.args("-t", "-q"), capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stderr + (nginx.prefix / "error.log").read_text()
    proc = subprocess.Popen(nginx.args("-g", "daemon off;"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                served_serial(nginx.https, "shop.nginx.test")
                break
            except OSError:
                assert proc.poll() is None, (nginx.prefix / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclasses.dataclass
class World:
    served: Served
    nginx: Nginx
    root: Path
    first: subprocess.CompletedProcess[str]

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_agent(self.specs, self.state, *args)

    def spec(self) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load((self.specs / "shop.yaml").read_text())
        return doc

    def serial_on_disk(self) -> int:
        return assert_pair_matches(self.nginx.out).serial_number


def _spec(served: Served, nginx: Nginx) -> dict[str, Any]:
    return {
        "name": "shop",
        "issuer": {"acme": {
            "directory": f"{served.https}/acme/directory",
            "tls_trust": str(served.root_pem),
            "challenge": {"http-01": {"webroot": str(nginx.webroot)}},
        }},
        "names": [{"nginx": str(nginx.conf)}],
        "output": {"directory": str(nginx.out), "fullchain": "fullchain.pem"},
        "trust_anchor": str(served.root_pem),
        "hooks": {"config_test": nginx.args("-t", "-q"),
                  "deploy": nginx.args("-s", "reload")},
        "endpoints": [{"host": "127.0.0.1", "port": nginx.https, "sni": "shop.nginx.test"}],
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """nginx serving a self-signed bootstrap pair for two names; the spec "shop" takes
    its names from nginx's configuration and is enrolled once."""
    program = require_peer("nginx", "nginx")
    base = tmp_path_factory.mktemp("agent-nginx")
    http, https = free_ports(2)
    with challtestsrv(base, http01=False, tlsalpn01=False) as chall, \
            serving(base, lambda d: configure_acme(d, resolver=chall.resolver, http01=http)
                    ) as served, safe_directory() as root:
        prefix, out, webroot = root / "nginx", root / "out", root / "www"
        for d in (prefix / "sites", prefix / "tmp", out, webroot, root / "specs"):
            d.mkdir(parents=True, mode=0o755)
        nginx = Nginx(program, prefix, http, https, out, webroot)
        nginx.conf.write_text(MAIN.format(prefix=prefix, http=http, webroot=webroot,
                                          user=_user_directive()))
        nginx.site("shop.nginx.test www.shop.nginx.test")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=shop.nginx.test", "-days", "1",
                "-keyout", str(out / "privkey.pem"), "-out", str(out / "fullchain.pem"))
        with running(nginx):
            write_spec(root / "specs", _spec(served, nginx))
            first = run_agent(root / "specs", root / "state", "enroll", "shop")
            yield World(served, nginx, root, first)


def _dns_names(cert: x509.Certificate) -> list[str]:
    return sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                  .value.get_values_for_type(x509.DNSName))


def _s_client_serial(port: int, sni: str) -> int:
    proc = openssl("s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni)
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", proc.stdout,
                    re.S)
    assert pem is not None, proc.stdout + proc.stderr
    return x509.load_pem_x509_certificate(pem.group(0).encode()).serial_number


def test_ok_names_from_nginx_enrolled_and_nginx_serves_the_new_serial(world: World) -> None:
    assert world.first.returncode == 0, world.first.stdout + world.first.stderr
    cert = assert_pair_matches(world.nginx.out)
    # The names nginx serves, and no more: its catch-all "_" is skipped.
    assert _dns_names(cert) == ["shop.nginx.test", "www.shop.nginx.test"]
    # The deploy hook reloaded nginx; openssl s_client sees the new certificate, and the
    # webroot is clean again.
    assert _s_client_serial(world.nginx.https, "shop.nginx.test") == cert.serial_number
    assert not list((world.nginx.webroot / ".well-known" / "acme-challenge").iterdir())
    row = status(world.specs, world.state)["shop"]
    assert row["serial"] == f"{cert.serial_number:x}" and row["last_error"] is None
    assert row["validation"] == "http-01 webroot"
    plan = world.run("plan", "--json")
    (p,) = json.loads(plan.stdout)
    assert p["due"] is False
    assert p["names"]["dns:www.shop.nginx.test"] == [
        f"nginx {world.nginx.prefix}/sites/shop.conf:3"]
    assert [s["text"] for s in p["skipped"]] == ["_"]


def test_ok_drift_a_new_server_name_is_enrolled_at_once(world: World) -> None:
    before = world.serial_on_disk()
    world.nginx.site("shop.nginx.test www.shop.nginx.test api.shop.nginx.test")
    plan = world.run("plan")
    assert plan.returncode == 0, plan.stderr
    assert "shop: DUE (names changed)" in plan.stdout, plan.stdout
    assert "drift     + dns:api.shop.nginx.test" in plan.stdout
    proc = world.run("enroll")  # every spec that is due
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shop: installed serial" in proc.stdout
    cert = assert_pair_matches(world.nginx.out)
    assert cert.serial_number != before
    assert _dns_names(cert) == ["api.shop.nginx.test", "shop.nginx.test",
                                "www.shop.nginx.test"]
    assert served_serial(world.nginx.https, "api.shop.nginx.test") == cert.serial_number


def test_ok_drift_noticed_by_the_daemon(world: World) -> None:
    """``agent run`` re-derives the names every --check-interval: a name removed from
    nginx's configuration leaves the certificate at the next look."""
    before = world.serial_on_disk()
    log = world.root / "daemon.log"
    with log.open("w") as f:
        proc = subprocess.Popen([CERTWRIGHT, "agent", "--specs", str(world.specs), "--state",
                                 str(world.state), "run", "--check-interval", "1s"],
                                stdout=f, stderr=subprocess.STDOUT, env=agent_env())
    try:
        deadline = time.monotonic() + 30
        while "agent running with 1 spec(s)" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(0.3)  # its first look found nothing due; the edit comes after
        world.nginx.site("shop.nginx.test www.shop.nginx.test")
        while world.serial_on_disk() == before:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "shop: enrolling (names changed)" in text, text
    cert = assert_pair_matches(world.nginx.out)
    assert _dns_names(cert) == ["shop.nginx.test", "www.shop.nginx.test"]
    wait_served(world.nginx.https, "shop.nginx.test", cert.serial_number)


def test_fail_broken_nginx_config_rolls_back(world: World) -> None:
    """Someone broke nginx's configuration: ``nginx -t`` fails after the switch, so the
    previous files are put back; nginx never loaded the new pair and keeps serving the
    old one; the error is in ``agent status``."""
    before = world.serial_on_disk()
    broken = world.nginx.prefix / "sites" / "broken.conf"
    broken.write_text("server { listen 127.0.0.1:1; server_name shop.nginx.test; "
                      "ssl_bogus_directive on; }\n")
    try:
        proc = world.run("enroll", "--force", "shop")
    finally:
        broken.unlink()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f'config_test hook {world.nginx.program} exited with 1: nginx: [emerg] unknown ' \
        'directive "ssl_bogus_directive"' in proc.stdout, proc.stdout
    # The reload after switching back fails the same way (nginx keeps its running
    # configuration), and the error says so.
    assert "rolled back to the previous certificate; after the rollback: deploy hook" \
        in proc.stdout
    assert world.serial_on_disk() == before
    assert served_serial(world.nginx.https, "shop.nginx.test") == before
    row = status(world.specs, world.state)["shop"]
    assert row["serial"] == f"{before:x}"
    assert 'unknown directive "ssl_bogus_directive"' in row["last_error"]
    assert row["failures"] == 1


def test_fail_deploy_hook_fails_then_nginx_is_reloaded_on_the_old_pair(world: World) -> None:
    """A deploy hook that reloads nginx (which then serves the new certificate) and then
    fails its own smoke test: the agent switches back and runs the hook again
    (CERTWRIGHT_ROLLBACK=1), so nginx serves the old serial again; the agent checks that
    it does."""
    before = world.serial_on_disk()
    doc = world.spec()
    calls = world.root / "deploy.log"
    reload = " ".join(world.nginx.args("-s", "reload"))
    script = world.root / "deploy.sh"
    script.write_text(f"""#!/bin/sh
{reload} || exit 1
echo "reload rollback=${{CERTWRIGHT_ROLLBACK:-0}}" >> {calls}
[ "$CERTWRIGHT_ROLLBACK" = 1 ] && exit 0
echo "smoke test failed: checkout returns 502"
exit 1
""")
    script.chmod(0o755)
    write_spec(world.specs, dict(doc, hooks={**doc["hooks"], "deploy": [str(script)]}))
    try:
        proc = world.run("enroll", "--force", "shop")
    finally:
        write_spec(world.specs, doc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"deploy hook {script} exited with 1: smoke test failed: checkout returns 502; " \
        "rolled back to the previous certificate" in proc.stdout, proc.stdout
    assert "after the rollback" not in proc.stdout
    assert calls.read_text().splitlines() == ["reload rollback=0", "reload rollback=1"]
    assert world.serial_on_disk() == before
    wait_served(world.nginx.https, "shop.nginx.test", before)
    row = status(world.specs, world.state)["shop"]
    assert row["serial"] == f"{before:x}" and "smoke test failed" in row["last_error"]
    # The next attempt, with the hook repaired, deploys.
    good = world.run("enroll", "--force", "shop")
    assert good.returncode == 0, good.stdout + good.stderr
    wait_served(world.nginx.https, "shop.nginx.test", world.serial_on_disk())
    assert status(world.specs, world.state)["shop"]["last_error"] is None
