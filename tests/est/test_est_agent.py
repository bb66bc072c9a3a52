"""`certwright agent enroll` with an `est` issuer against a real `certwright serve`: the
first enrollment by simpleenroll with the host's bootstrap credential (HTTP Basic), the
renewal by simplereenroll authenticated with the certificate it replaces (mutual TLS,
RFC 7030 4.2.2), each installed and counted in the server's store. The negative table
through the agent's own EST client is in tests/est/test_est_interop.py
(test_fail_negative_table_through_the_agents_client), beside the tests' client's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography import x509

from certwright.ca import datadir
from certwright.store.repo import Store
from tests.agent_support import assert_pair_matches, run_agent, safe_directory, status, write_spec
from tests.cli import run
from tests.served import Served, serving

pytestmark = pytest.mark.peer("curl")

PROFILE = "tls-client"  # EST label tls-client, Basic credentials, automatic approval
NAME = "agent-est1.internal"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("est-agent")) as s:
        yield s


def count(served: Served) -> int:
    _, config, _ = datadir.load(served.data)
    store = Store.open(config.store.url, served.data)
    try:
        return store.count_certificates()
    finally:
        store.close()


def issued_by(served: Served, serial: int) -> str:
    """The requester the server recorded for the certificate ``serial``."""
    proc = run("audit", "export", "--data", str(served.data), check=True)
    (record,) = [r for r in map(json.loads, proc.stdout.splitlines())
                 if r["event"] == "certificate.issued" and r["subject"] == f"{serial:x}"]
    return str(record["actor"])


def test_ok_agent_enroll_basic_then_reenroll_with_its_certificate(served: Served) -> None:
    made = run("est", "credential", "add", "agent-est1", "--profile", PROFILE, "--data",
               str(served.data), check=True)
    password = next(line.split()[-1] for line in made.stdout.splitlines()
                    if line.startswith("password"))
    with safe_directory() as root:
        secret = root / "est.password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        specs, state, out = root / "specs", root / "state", root / "out"
        specs.mkdir()
        out.mkdir()
        write_spec(specs, {
            "name": "device",
            "issuer": {"est": {"url": served.https, "label": PROFILE, "username": "agent-est1",
                               "password_file": str(secret),
                               "tls_trust": str(served.root_pem)}},
            "names": [{"static": [NAME]}],
            "output": {"directory": str(out), "fullchain": "fullchain.pem"},
            "trust_anchor": str(served.root_pem),
        })
        before = count(served)
        first = run_agent(specs, state, "enroll")
        assert first.returncode == 0, first.stdout + first.stderr
        cert = assert_pair_matches(out)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [NAME]
        chain = x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes())
        assert chain[0] == cert and chain[1] == served.issuing
        assert count(served) == before + 1
        assert issued_by(served, cert.serial_number) == "est-credential:agent-est1"
        row = status(specs, state)["device"]
        assert (row["protocol"], row["serial"]) == ("est", f"{cert.serial_number:x}")

        # The renewal: simplereenroll with the live certificate and key as the TLS client
        # certificate; the server records the renewed certificate as the requester.
        again = run_agent(specs, state, "enroll", "--force")
        assert again.returncode == 0, again.stdout + again.stderr
        renewed = assert_pair_matches(out)
        assert renewed.serial_number != cert.serial_number
        assert renewed.subject == cert.subject
        assert renewed.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value == san
        assert count(served) == before + 2
        assert issued_by(served, renewed.serial_number) == \
            f"est-certificate:{cert.serial_number:x}"
        assert status(specs, state)["device"]["serial"] == f"{renewed.serial_number:x}"
        logs = first.stdout + first.stderr + again.stdout + again.stderr
        assert password not in logs
