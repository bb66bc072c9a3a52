"""An EST request held for approval, as the approver sees it (issue 11, defect 3): a real
``certwright serve`` with the default profiles, openssl and curl as a person types them,
then ``certwright requests list`` and ``requests show``, which must name the device
(its CN: the ``device`` profile uses the CN as a name), who asked, over which protocol,
the key, the checks that held and the wait, before anyone approves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import run
from tests.served import Served, curl, openssl, serving

pytestmark = pytest.mark.peer("curl")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("est-approval")) as s:
        yield s


def test_ok_held_est_request_shows_requester_names_key_and_checks(served: Served,
                                                                   tmp_path: Path) -> None:
    data = str(served.data)
    added = run("est", "credential", "add", "device001", "--profile", "device", "--data", data,
                check=True)
    password = re.search(r"^password: (\S+)$", added.stdout, re.M)
    assert password, added.stdout
    made = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", str(tmp_path / "device.key"),
                   "-out", str(tmp_path / "device.csr"),
                   "-subj", "/CN=device001.devices.internal")
    assert made.returncode == 0, made.stderr
    held = curl(f"https://localhost:{served.https_port}/.well-known/est/device/simpleenroll",
                "--cacert", str(served.root_pem), "--user", f"device001:{password.group(1)}",
                "--data-binary", f"@{tmp_path / 'device.csr'}",
                "-H", "Content-Type: application/pkcs10")
    assert held.status == 202, held
    rid = re.match(rb"request ([0-9a-f]+) is pending", held.body)
    assert rid, held.body
    request_id = rid.group(1).decode()

    listed = run("requests", "list", "--data", data, check=True).stdout
    row = next(line for line in listed.splitlines() if line.startswith(request_id))
    assert "est-credential:device001" in row and "dns:device001.devices.internal" in row, listed

    shown = run("requests", "show", request_id, "--data", data, check=True).stdout
    fields = dict(re.findall(r"^(\w[\w ]*): +(.*)$", shown, re.M))
    assert fields["requester"] == "est-credential:device001", shown
    assert (fields["profile"], fields["protocol"]) == ("device", "est"), shown
    assert fields["subject"] == "CN=device001.devices.internal", shown
    assert fields["names"] == "dns:device001.devices.internal", shown
    assert fields["key"] == "ECDSA P-256 (256 bits)", shown
    assert re.search(r"^waited: +\d+[dhms]", shown, re.M), shown
    assert re.search(r"^  held +protocols: est is one of ", shown, re.M), shown
    assert re.search(r"^  held +names: 1 name", shown, re.M), shown
    assert "approving now would issue" in shown and "None" not in shown

    as_json = json.loads(run("requests", "show", request_id, "--json", "--data", data,
                             check=True).stdout)
    assert (as_json["protocol"], as_json["requester"]) == ("est", "est-credential:device001")
    assert as_json["names"] == ["dns:device001.devices.internal"]
    assert as_json["state"] == "pending" and as_json["would_issue"] is True
