"""The agent's EST client against certwright's own EST server, on a profile an operator
approves (`device`): the first attempt is held (202, Retry-After) and the agent polls;
it gives up the attempt after its pending_timeout, keeping its key; after `certwright
requests approve`, the next attempt (the same key, so the server finds the held request)
collects the certificate, and it is installed. A rejection is reported with the
operator's reason, and the old files stay.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.agent_support import assert_pair_matches, run_agent, safe_directory, status, write_spec
from tests.cli import run
from tests.served import Served, serving

pytestmark = pytest.mark.peer("curl")

PROFILE = "device"


def _configure(data: Path) -> None:
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["profiles"][PROFILE]["est"]["retry_after"] = "1s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("agent-est-approval"), _configure) as s:
        yield s


def _pending(served: Served) -> list[dict[str, Any]]:
    proc = run("requests", "list", "--json", "--data", str(served.data), check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _host(served: Served, root: Path, name: str) -> tuple[Path, Path, Path]:
    """A credential for ``name``, its password file, and a spec asking for ``name``."""
    made = run("est", "credential", "add", name, "--profile", PROFILE, "--data",
               str(served.data), check=True)
    password = next(line.split()[-1] for line in made.stdout.splitlines()
                    if "password" in line.lower())
    secret = root / f"{name}.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    specs, state, out = root / "specs", root / "state", root / "out" / name
    for d in (specs, out):
        d.mkdir(parents=True, exist_ok=True)
    write_spec(specs, {
        "name": name,
        "issuer": {"est": {"url": served.https, "label": PROFILE, "username": name,
                           "password_file": str(secret), "tls_trust": str(served.root_pem),
                           "pending_timeout": "3s"}},
        "names": [{"static": [f"{name}.devices.internal"]}],
        "output": {"directory": str(out), "fullchain": "fullchain.pem"},
        "trust_anchor": str(served.root_pem),
    })
    return specs, state, out


def test_ok_held_then_approved_then_collected_with_the_same_key(served: Served) -> None:
    with safe_directory() as root:
        specs, state, out = _host(served, root, "sensor-7")
        first = run_agent(specs, state, "enroll", "sensor-7")
        assert first.returncode == 1, first.stdout + first.stderr
        assert "EST request pending; asking again in 1 s" in first.stderr
        assert "still pending after 3 s (manual approval?)" in first.stdout
        assert not (out / "cert.pem").exists()
        (held,) = [r for r in _pending(served)
                   if r["requester"] == "est-credential:sensor-7"]
        assert status(specs, state)["sensor-7"]["last_error"]
        run("requests", "approve", held["id"], "--data", str(served.data), check=True)
        second = run_agent(specs, state, "enroll", "sensor-7")
        assert second.returncode == 0, second.stdout + second.stderr
        cert = assert_pair_matches(out)
        assert x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes())[0] == cert
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["sensor-7.devices.internal"]
        # The request the operator approved is the one the certificate came from: no
        # second request was made for the retry.
        assert not [r for r in _pending(served) if r["requester"] == "est-credential:sensor-7"]
        row = status(specs, state)["sensor-7"]
        assert (row["protocol"], row["serial"]) == ("est", format(cert.serial_number, "x"))
        assert not row["last_error"]


def test_fail_rejected_by_the_operator_is_reported(served: Served) -> None:
    with safe_directory() as root:
        specs, state, out = _host(served, root, "sensor-9")
        first = run_agent(specs, state, "enroll", "sensor-9")
        assert first.returncode == 1, first.stdout + first.stderr
        (held,) = [r for r in _pending(served)
                   if r["requester"] == "est-credential:sensor-9"]
        run("requests", "reject", held["id"], "--reason", "not in the inventory",
            "--data", str(served.data), check=True)
        second = run_agent(specs, state, "enroll", "sensor-9")
        assert second.returncode == 1
        assert "HTTP 403" in second.stdout and "not in the inventory" in second.stdout, \
            second.stdout
        assert not (out / "cert.pem").exists()
        assert "not in the inventory" in status(specs, state)["sensor-9"]["last_error"]
