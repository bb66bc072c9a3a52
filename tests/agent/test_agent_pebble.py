"""The agent against a CA we did not write: Pebble (Debian package ``pebble``), with
pebble-challtestsrv as its DNS server, validating http-01 against the agent's own
standalone listener. Debian's Pebble 2.4 offers no renewalInfo: the agent notices and
schedules renewal by its lifetime rule; a forced renewal then replaces the certificate."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.agent_support import (
    agent_env,
    assert_pair_matches,
    run_agent,
    safe_directory,
    status,
)
from tests.agent_support import write_spec as write
from tests.challtestsrv import challtestsrv
from tests.conftest import require_peer
from tests.served import free_ports, openssl

pytestmark = pytest.mark.peer("pebble", "pebble-challtestsrv")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int, Path]]:
    """(directory URL, its TLS certificate, the http-01 port it validates on, its root)."""
    prog = require_peer("pebble", "pebble")
    base = tmp_path_factory.mktemp("pebble")
    tls_cert, tls_key = base / "tls.pem", base / "tls.key"
    made = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-subj", "/CN=localhost", "-days", "1",
                   "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                   "-keyout", str(tls_key), "-out", str(tls_cert))
    assert made.returncode == 0, made.stderr
    port, mgmt, http01, tls = free_ports(4)
    config = base / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{mgmt}",
        "certificate": str(tls_cert), "privateKey": str(tls_key), "httpPort": http01,
        "tlsPort": tls, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    with challtestsrv(base, http01=False, tlsalpn01=False) as chall:
        env = agent_env(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        log = (base / "pebble.log").open("wb")
        proc = subprocess.Popen([prog, "-config", str(config), "-dnsserver", chall.resolver],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", mgmt), timeout=1):
                        break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, \
                        (base / "pebble.log").read_text()
                    time.sleep(0.05)
            root = base / "pebble-root.pem"
            # Pebble serves its management API with its own listener certificate.
            ctx = ssl.create_default_context(cafile=str(tls_cert))
            r = httpx.get(f"https://127.0.0.1:{mgmt}/roots/0", verify=ctx, trust_env=False)
            assert r.status_code == 200, r.text
            root.write_text(r.text)
            yield f"https://localhost:{port}/dir", tls_cert, http01, root
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()


def test_ok_pebble_enroll_lifetime_rule_then_renew(pebble: tuple[str, Path, int, Path]
                                                  ) -> None:
    directory, tls_cert, http01, root = pebble
    with safe_directory() as base:
        (base / "specs").mkdir()
        out = base / "out"
        out.mkdir()
        write(base / "specs", {
            "name": "peb",
            "issuer": {"acme": {"directory": directory, "tls_trust": str(tls_cert),
                                "challenge": {"http-01": {"standalone": f"127.0.0.1:{http01}"}}}},
            "names": [{"static": ["peb.agent.test", "www.peb.agent.test"]}],
            "key": {"type": "rsa", "bits": 2048},
            "output": {"directory": str(out), "fullchain": "fullchain.pem"},
            "trust_anchor": str(root),
        })
        first = run_agent(base / "specs", base / "state", "enroll", "peb")
        assert first.returncode == 0, first.stdout + first.stderr
        cert = assert_pair_matches(out)
        assert cert.issuer != cert.subject
        row = status(base / "specs", base / "state")["peb"]
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        at = dt.datetime.fromisoformat(row["next_renewal"])
        latest = cert.not_valid_after_utc - life / 3
        assert latest - life * 0.02 - dt.timedelta(seconds=1) <= at <= latest, (at, latest)
        renewed = run_agent(base / "specs", base / "state", "enroll", "--force")
        assert renewed.returncode == 0, renewed.stderr
        new = assert_pair_matches(out)
        assert new.serial_number != cert.serial_number
        assert sorted(new.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                      .value.get_values_for_type(x509.DNSName)) == [
            "peb.agent.test", "www.peb.agent.test"]
        assert os.readlink(out / "cert.pem") == ".certwright/peb/live/cert.pem"
