"""The ``certwright`` command end to end, as an operator uses it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509

from tests.cli import assert_one_line_error, run
from tests.helpers import csr_pem, key

COMMANDS = [
    [], ["init"], ["serve"], ["issue"], ["requests"], ["requests", "list"],
    ["requests", "show"], ["requests", "approve"], ["requests", "reject"], ["certs"],
    ["certs", "list"], ["certs", "show"], ["certs", "revoke"], ["crl"], ["audit"], ["audit", "verify"],
    ["audit", "export"], ["db"], ["db", "upgrade"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "certwright" for c in COMMANDS])
def test_ok_help(command: list[str]) -> None:
    proc = run(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: certwright" in proc.stdout


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            + oct(p.stat().st_mode) for p in sorted(path.rglob("*")) if p.is_file()}


def test_ok_init_layout_and_modes(tmp_path: Path) -> None:
    data = tmp_path / "ca"
    proc = run("init", "--data", str(data), check=True)
    assert "trust anchor:" in proc.stdout
    for name in ("root.key", "issuing.key"):
        mode = stat.S_IMODE((data / "ca" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE((data / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    for name in ("certwright.yaml", "certwright.db"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    root = x509.load_pem_x509_certificate((data / "root.pem").read_bytes())
    chain = x509.load_pem_x509_certificates((data / "chain.pem").read_bytes())
    assert len(chain) == 1 and chain[0].issuer == root.subject
    assert root.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert not [p for p in data.iterdir() if p.name.startswith(".init-")]


def test_fail_init_twice_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "ca"
    run("init", "--data", str(data), check=True)
    before = tree_digest(data)
    proc = run("init", "--data", str(data), "--key-type", "rsa-3072")
    assert_one_line_error(proc, "already holds a CA", "nothing was changed")
    assert tree_digest(data) == before


def test_ok_init_rsa(tmp_path: Path) -> None:
    data = tmp_path / "ca"
    run("init", "--data", str(data), "--key-type", "rsa-3072", check=True)
    root = x509.load_pem_x509_certificate((data / "root.pem").read_bytes())
    assert root.public_key().key_size == 3072  # type: ignore[union-attr]
    out = tmp_path / "c.pem"
    req = tmp_path / "r.csr"
    req.write_bytes(csr_pem(["rsa.svc.internal"]))
    run("issue", "--data", str(data), "--csr", str(req), "--out", str(out), check=True)
    from tests.conftest import lint_and_verify

    assert lint_and_verify(data) == 1


def test_fail_unknown_key_type(tmp_path: Path) -> None:
    proc = run("init", "--data", str(tmp_path / "x"), "--key-type", "dsa-1024")
    assert proc.returncode == 2 and "Invalid value for '--key-type'" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_fail_no_ca_here(tmp_path: Path) -> None:
    proc = run("certs", "list", "--data", str(tmp_path / "none"))
    assert_one_line_error(proc, "no such file (run `certwright init")


def serial_of(stderr: str) -> str:
    m = re.search(r"issued serial ([0-9a-f]+)", stderr)
    assert m, stderr
    return m.group(1)


def test_ok_issue_list_show_revoke_crl(ca_dir: Path, tmp_path: Path) -> None:
    req = tmp_path / "r.csr"
    req.write_bytes(csr_pem(["api.svc.internal", "10.9.8.7"], cn="api.svc.internal"))
    proc = run("issue", "--data", str(ca_dir), "--csr", str(req), "--validity", "7d",
               check=True)
    serial = serial_of(proc.stderr)
    leaf = x509.load_pem_x509_certificates(proc.stdout.encode())[0]
    assert format(leaf.serial_number, "x") == serial
    assert leaf.serial_number.bit_length() > 64
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.days == 7

    rows = [json.loads(x) for x in run("certs", "list", "--json", "--data", str(ca_dir),
                                       check=True).stdout.splitlines()]
    assert [r["serial"] for r in rows] == [serial]
    assert rows[0]["names"] == ["dns:api.svc.internal", "ip:10.9.8.7"]
    table = run("certs", "list", "--data", str(ca_dir), check=True).stdout
    assert serial in table and "valid" in table

    shown = run("certs", "show", serial.upper(), "--data", str(ca_dir), check=True).stdout
    assert "api.svc.internal" in shown
    pem = run("certs", "show", serial, "--pem", "--data", str(ca_dir), check=True).stdout
    assert x509.load_pem_x509_certificate(pem.encode()).serial_number == leaf.serial_number

    assert_one_line_error(run("certs", "revoke", serial, "--reason", "bogus", "--data",
                              str(ca_dir)), "unknown revocation reason 'bogus'")
    out = run("certs", "revoke", serial, "--reason", "keyCompromise", "--data", str(ca_dir),
              check=True).stdout
    assert out.strip() == f"revoked {serial} (keyCompromise)"
    assert_one_line_error(run("certs", "revoke", serial, "--data", str(ca_dir)),
                          "already revoked")
    assert_one_line_error(run("certs", "revoke", "zz", "--data", str(ca_dir)),
                          "not a hexadecimal serial")
    assert_one_line_error(run("certs", "revoke", "abc123", "--data", str(ca_dir)),
                          "no certificate with serial abc123")

    crl_path = tmp_path / "crl.pem"
    run("crl", "--pem", "--out", str(crl_path), "--data", str(ca_dir), check=True)
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise


def test_ok_manual_approval_flow(ca_dir: Path, tmp_path: Path) -> None:
    req = tmp_path / "r.csr"
    req.write_bytes(csr_pem(["cam7.devices.internal"], cn="cam7.devices.internal",
                            private_key=key("ed25519")))
    proc = run("issue", "--data", str(ca_dir), "--profile", "device", "--csr", str(req))
    assert proc.returncode == 3, proc.stderr
    m = re.search(r"request ([0-9a-f]+) is pending", proc.stderr)
    assert m, proc.stderr
    rid = m.group(1)
    assert proc.stdout == ""
    listed = run("requests", "list", "--data", str(ca_dir), check=True).stdout
    assert rid in listed and "cam7.devices.internal" in listed
    out = run("requests", "approve", rid, "--operator", "alice", "--data", str(ca_dir),
              check=True).stdout
    assert f"approved {rid}: issued serial" in out
    assert_one_line_error(run("requests", "approve", rid, "--data", str(ca_dir)),
                          f"request {rid} is issued, not pending")
    assert run("requests", "list", "--data", str(ca_dir), check=True).stdout.count("\n") == 1

    proc = run("issue", "--data", str(ca_dir), "--profile", "device", "--csr", str(req))
    rid2 = re.search(r"request ([0-9a-f]+) is pending", proc.stderr).group(1)  # type: ignore[union-attr]
    run("requests", "reject", rid2, "--reason", "unknown device", "--data", str(ca_dir),
        check=True)
    rows = [json.loads(x) for x in run("requests", "list", "--state", "all", "--json",
                                       "--data", str(ca_dir), check=True).stdout.splitlines()]
    states = {r["id"]: (r["state"], r["reason"]) for r in rows}
    assert states[rid][0] == "issued"
    assert states[rid2] == ("rejected", "unknown device")
    events = [json.loads(x) for x in run("audit", "export", "--data", str(ca_dir),
                                         check=True).stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("request.pending") == 2
    assert "request.approved" in kinds and kinds.count("request.rejected") == 1
    issued = [e for e in events if e["event"] == "certificate.issued"]
    assert issued[-1]["data"]["approved_by"] == "alice"


def test_ok_data_from_environment(ca_dir: Path) -> None:
    env_run = os.environ.copy()
    env_run["CERTWRIGHT_DATA"] = str(ca_dir)
    import subprocess

    from tests.cli import CERTWRIGHT

    proc = subprocess.run([CERTWRIGHT, "audit", "verify"], env=env_run, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and "audit log intact" in proc.stdout


def test_fail_insecure_data_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert_one_line_error(run("init", "--data", str(shared)),
                          "is writable by group or others", "chmod go-w")
    assert list(shared.iterdir()) == []
    data = tmp_path / "ca"
    run("init", "--data", str(data), check=True)
    data.chmod(0o770)
    assert_one_line_error(run("certs", "list", "--data", str(data)),
                          "is writable by group or others")
    data.chmod(0o750)
    (data / "ca").chmod(0o777)
    assert_one_line_error(run("certs", "list", "--data", str(data)), "/ca is writable")
    (data / "ca").chmod(0o700)
    assert run("certs", "list", "--data", str(data)).returncode == 0
