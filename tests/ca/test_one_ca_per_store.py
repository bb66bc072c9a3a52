"""One database, one CA: ``init`` refuses a database that already holds a CA, and a data
directory whose CA differs from the one its database belongs to does not open.

Issue 11, defect 2: ``init --store-url`` on a database another data directory used made a
second CA in it, and ``certs list`` then mixed both CAs' certificates. Every case runs on
SQLite (an absolute path both directories name) and on PostgreSQL (``store_url`` in
tests/pg.py), through the real command line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certwright.store import schema
from certwright.store.repo import Store
from tests.cli import assert_one_line_error, run
from tests.helpers import csr_pem

CA_ROOT_SETTING = "ca_root_sha256"  # where the store records its CA's root


def _init(data: Path, url: str) -> None:
    run("init", "--data", str(data), "--store-url", url, check=True)


def _issue(data: Path, tmp_path: Path, name: str) -> str:
    req = tmp_path / f"{name}.csr"
    req.write_bytes(csr_pem([name]))
    proc = run("issue", "--data", str(data), "--csr", str(req), check=True)
    return proc.stderr.strip().rsplit(" ", 1)[-1]


def _serials(data: Path) -> list[str]:
    out = run("certs", "list", "--json", "--data", str(data), check=True).stdout
    return [json.loads(line)["serial"] for line in out.splitlines()]


def _audit(data: Path) -> list[str]:
    return run("audit", "export", "--data", str(data), check=True).stdout.splitlines()


def _root_sha256(data: Path) -> str:
    root = x509.load_pem_x509_certificate((data / "ca" / "root.pem").read_bytes())
    return root.fingerprint(hashes.SHA256()).hex()


def _recorded(url: str) -> str | None:
    store = Store.open(url)
    try:
        return store.setting(CA_ROOT_SETTING)
    finally:
        store.close()


def _point_at(data: Path, url: str) -> None:
    """Edit ``store.url`` in DATA/certwright.yaml, as an operator would."""
    config = data / "certwright.yaml"
    lines = config.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("url: "))
    lines[at] = f"  url: {url}\n"
    config.write_text("".join(lines))


def test_ok_init_records_the_ca_in_the_store(tmp_path: Path, store_url: str) -> None:
    _init(tmp_path / "ha1", store_url)
    assert _recorded(store_url) == _root_sha256(tmp_path / "ha1")


def test_fail_init_on_a_database_holding_a_ca(tmp_path: Path, store_url: str) -> None:
    first, second = tmp_path / "ha1", tmp_path / "ha2"
    _init(first, store_url)
    serial = _issue(first, tmp_path, "web.svc.internal")
    before = _audit(first)

    proc = run("init", "--data", str(second), "--store-url", store_url)
    assert_one_line_error(
        proc, "already holds a CA", _root_sha256(first), "nothing was changed",
        "copy the first data directory (its ca/ files and certwright.yaml) to the new server")
    assert not second.exists()  # no data directory left behind
    assert _audit(first) == before  # nothing written to the database
    assert _serials(first) == [serial]
    assert _recorded(store_url) == _root_sha256(first)


def test_ok_a_copied_data_directory_is_a_replica(tmp_path: Path, store_url: str) -> None:
    """What the refusal tells the operator to do instead works."""
    first, replica = tmp_path / "ha1", tmp_path / "ha2"
    _init(first, store_url)
    serial = _issue(first, tmp_path, "web.svc.internal")
    replica.mkdir(mode=0o750)
    shutil.copytree(first / "ca", replica / "ca")
    shutil.copy2(first / "certwright.yaml", replica / "certwright.yaml")

    other = _issue(replica, tmp_path, "api.svc.internal")
    assert sorted(_serials(replica)) == sorted([serial, other]) == sorted(_serials(first))
    assert "audit log intact" in run("audit", "verify", "--data", str(replica),
                                     check=True).stdout


def test_fail_open_a_data_directory_of_another_ca(tmp_path: Path, store_url: str) -> None:
    first, other = tmp_path / "ha1", tmp_path / "other"
    _init(first, store_url)
    serial = _issue(first, tmp_path, "web.svc.internal")
    run("init", "--data", str(other), check=True)  # its own SQLite store
    before = _audit(first)

    _point_at(other, store_url)
    for command in (["certs", "list"], ["issue", "--csr", str(tmp_path / "x.csr")],
                    ["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"]):
        (tmp_path / "x.csr").write_bytes(csr_pem(["evil.svc.internal"]))
        proc = run(*command, "--data", str(other))
        assert_one_line_error(proc, "belongs to another CA", _root_sha256(first),
                              _root_sha256(other), "refusing to mix two CAs")
    assert _audit(first) == before
    assert _serials(first) == [serial]


def test_ok_a_store_older_than_the_record_keeps_its_ca(
        tmp_path: Path, store_url: str) -> None:
    """A database older than the record: the CA its ``ca.initialized`` audit record names
    keeps it (and gets the record)."""
    first = tmp_path / "ha1"
    _init(first, store_url)
    store = Store.open(store_url)
    try:
        with store.write() as conn:
            conn.execute(sa.delete(schema.settings)
                         .where(schema.settings.c.key == CA_ROOT_SETTING))
    finally:
        store.close()
    assert _recorded(store_url) is None
    _serials(first)
    assert _recorded(store_url) == _root_sha256(first)



def test_ok_a_store_naming_no_ca_is_adopted_by_the_first_to_open_it(
        tmp_path: Path, store_url: str) -> None:
    store = Store.open(store_url)
    try:
        store.migrate()  # the schema, and no CA
    finally:
        store.close()
    adopter, late = tmp_path / "adopter", tmp_path / "late"
    for d in (adopter, late):
        run("init", "--data", str(d), check=True)
        _point_at(d, store_url)
    assert _serials(adopter) == []
    assert _recorded(store_url) == _root_sha256(adopter)
    assert any('"store.adopted"' in line for line in _audit(adopter))
    assert_one_line_error(run("certs", "list", "--data", str(late)), "belongs to another CA")
