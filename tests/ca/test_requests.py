"""``certwright requests list|show``: what an approver sees before deciding (issue 11,
defect 3: a CN-only request was listed with no names, and there was no ``show``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.cli import assert_one_line_error, run
from tests.helpers import csr_pem, key


def _held(ca_dir: Path, tmp_path: Path, pem: bytes, operator: str = "alice") -> str:
    """Submit ``pem`` to the ``device`` profile (manual approval) from the CLI."""
    req = tmp_path / "r.csr"
    req.write_bytes(pem)
    proc = run("issue", "--data", str(ca_dir), "--profile", "device", "--csr", str(req),
               "--operator", operator)
    assert proc.returncode == 3, proc.stderr
    m = re.search(r"request ([0-9a-f]+) is pending", proc.stderr)
    assert m, proc.stderr
    return m.group(1)


def _show(ca_dir: Path, rid: str) -> str:
    return run("requests", "show", rid, "--data", str(ca_dir), check=True).stdout


def _fields(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines()
                if not line.startswith(" ") and ": " in line)


def test_ok_cn_only_request_listed_and_shown_with_its_name(ca_dir: Path,
                                                           tmp_path: Path) -> None:
    """ok/cn-as-name: the device profile turns the CN into the name; the approver sees it."""
    rid = _held(ca_dir, tmp_path, csr_pem([], cn="device001.devices.internal"))
    listed = run("requests", "list", "--data", str(ca_dir), check=True).stdout
    row = next(line for line in listed.splitlines() if line.startswith(rid))
    assert "dns:device001.devices.internal" in row, listed
    rows = [json.loads(x) for x in run("requests", "list", "--json", "--data", str(ca_dir),
                                       check=True).stdout.splitlines()]
    assert rows[0]["names"] == ["dns:device001.devices.internal"]

    shown = _show(ca_dir, rid)
    fields = {k: v.strip() for k, v in _fields(shown).items()}
    assert fields["requester"] == "cli:alice"
    assert fields["profile"] == "device" and fields["protocol"] == "cli"
    assert fields["state"] == "pending"
    assert fields["subject"] == "CN=device001.devices.internal"
    assert fields["names"] == "dns:device001.devices.internal"
    assert fields["key"] == "ECDSA P-256 (256 bits)"
    assert re.fullmatch(r"\d+[dhms]( \d+[dhms])?", fields["waited"]), fields
    for rule in ("protocols", "keys", "names", "names.keep_cn", "validity"):
        assert re.search(rf"^  held +{re.escape(rule)}: ", shown, re.M), (rule, shown)
    assert "approving now would issue" in shown
    # Fields with no value print nothing: a pending request has no serial, no decider.
    assert "None" not in shown and "serial" not in fields and "decided by" not in fields


def test_ok_show_json_rsa_key_then_the_decision(ca_dir: Path, tmp_path: Path) -> None:
    """ok/json: key type and size, every check, then who decided and the serial."""
    rid = _held(ca_dir, tmp_path, csr_pem(["cam1.devices.internal", "cam1b.devices.internal"],
                                          private_key=key("rsa2048")))
    shown = json.loads(run("requests", "show", rid, "--json", "--data", str(ca_dir),
                           check=True).stdout)
    assert shown["id"] == rid and shown["requester"] == "cli:alice"
    assert (shown["key_type"], shown["key_bits"], shown["key_curve"]) == ("rsa", 2048, None)
    assert shown["names"] == ["dns:cam1.devices.internal", "dns:cam1b.devices.internal"]
    assert shown["would_issue"] is True and shown["waited_seconds"] >= 0
    assert all(c["held"] for c in shown["checks"]), shown["checks"]
    assert shown["serial"] is None and shown["decided_by"] is None

    run("requests", "approve", rid, "--operator", "bob", "--data", str(ca_dir), check=True)
    fields = {k: v.strip() for k, v in _fields(_show(ca_dir, rid)).items()}
    assert fields["state"] == "issued" and fields["decided by"] == "bob"
    assert re.fullmatch(r"[0-9a-f]+", fields["serial"]), fields


def test_fail_show_names_the_rule_a_changed_profile_now_breaks(ca_dir: Path,
                                                               tmp_path: Path) -> None:
    """fail/profile-tightened: the checks are run again now, not copied from the hold."""
    rid = _held(ca_dir, tmp_path, csr_pem(["cam2.devices.internal"],
                                          private_key=key("rsa2048")))
    path = ca_dir / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["device"]["keys"]["rsa_min_bits"] = 3072
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    shown = _show(ca_dir, rid)
    assert re.search(r"^  FAILS +keys.rsa_min_bits: RSA key of 2048 bits", shown, re.M), shown
    assert re.search(r"^  held +protocols: ", shown, re.M), shown
    assert "approving now would be refused" in shown
    assert "dns:cam2.devices.internal" in _fields(shown)["names"]


def test_fail_show_unknown_request(ca_dir: Path) -> None:
    """fail/unknown-id: one line, as every command fails."""
    assert_one_line_error(run("requests", "show", "0123456789abcdef", "--data", str(ca_dir)),
                          "no request with id 0123456789abcdef")
