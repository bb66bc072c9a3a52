"""The audit log's hash chain catches edits, deletions, reordering and truncation."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from certwright.ca import datadir
from certwright.ca.revocation import Reason
from certwright.store import audit
from tests.cli import assert_one_line_error, run
from tests.helpers import csr, request


@pytest.fixture
def busy_ca(ca_dir: Path) -> Path:
    """A CA whose log holds init, config, three issuances and a revocation."""
    with datadir.opened(ca_dir) as ca:
        serials = [ca.enroll(request(csr([f"h{i}.svc.internal"]))).record.serial  # type: ignore[union-attr]
                   for i in range(3)]
        ca.revoke(serials[0], Reason.key_compromise, "alice")
    return ca_dir


def db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(data / "certwright.db", isolation_level=None)


def verify(data: Path) -> tuple[int, str]:
    proc = run("audit", "verify", "--data", str(data))
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def test_ok_intact_chain(busy_ca: Path) -> None:
    code, out = verify(busy_ca)
    assert code == 0, out
    assert out == "audit log intact: 6 records"
    events = [json.loads(line)["event"] for line in
              run("audit", "export", "--data", str(busy_ca), check=True).stdout.splitlines()]
    assert events == ["ca.initialized", "config.loaded", "certificate.issued",
                      "certificate.issued", "certificate.issued", "certificate.revoked"]


def _edit(c: sqlite3.Connection) -> None:
    row = c.execute("SELECT data FROM audit_log WHERE seq = 4").fetchone()
    c.execute("UPDATE audit_log SET data = ? WHERE seq = 4",
              (row[0].replace("h1.svc.internal", "evil.svc.internal"),))


def _edit_and_rehash(c: sqlite3.Connection) -> None:
    # A careful attacker recomputes the edited record's own hash: the next link breaks.
    seq, at, event, actor, subject, data, prev = c.execute(
        "SELECT seq, at, event, actor, subject, data, prev_hash FROM audit_log WHERE seq = 4"
    ).fetchone()
    data = data.replace("h1.svc.internal", "evil.svc.internal")
    import datetime as dt

    when = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC)
    h = audit.link_hash(seq, when, event, actor, subject, data, prev)
    c.execute("UPDATE audit_log SET data = ?, hash = ? WHERE seq = 4", (data, h))


def _edit_actor(c: sqlite3.Connection) -> None:
    c.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 6")


def _delete(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM audit_log WHERE seq = 3")


def _reorder(c: sqlite3.Connection) -> None:
    # Swap records 3 and 4 wholesale but keep the sequence numbers in place.
    r3 = c.execute("SELECT at, event, actor, subject, data, prev_hash, hash FROM audit_log "
                   "WHERE seq = 3").fetchone()
    r4 = c.execute("SELECT at, event, actor, subject, data, prev_hash, hash FROM audit_log "
                   "WHERE seq = 4").fetchone()
    q = ("UPDATE audit_log SET at=?, event=?, actor=?, subject=?, data=?, prev_hash=?, hash=? "
         "WHERE seq = ?")
    c.execute(q, (*r4, 3))
    c.execute(q, (*r3, 4))


def _renumber(c: sqlite3.Connection) -> None:
    # Swap the sequence numbers of 3 and 4 (rows otherwise untouched).
    c.execute("UPDATE audit_log SET seq = -3 WHERE seq = 3")
    c.execute("UPDATE audit_log SET seq = 3 WHERE seq = 4")
    c.execute("UPDATE audit_log SET seq = 4 WHERE seq = -3")


def _truncate(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM audit_log WHERE seq >= 5")


TAMPERING: list[tuple[str, Callable[[sqlite3.Connection], None], str]] = [
    ("edit", _edit, "audit chain broken at record 4: contents do not match its hash (edited)"),
    ("edit-and-rehash", _edit_and_rehash,
     "audit chain broken at record 5: does not link to the previous record"),
    ("edit-actor", _edit_actor, "audit chain broken at record 6: contents do not match"),
    ("delete", _delete, "audit chain broken at record 3: record 3 is missing (next is 4)"),
    ("reorder", _reorder, "audit chain broken at record 3: does not link to the previous"),
    ("renumber", _renumber, "audit chain broken at record 3: does not link to the previous"),
    ("truncate", _truncate, "audit chain broken at record 5: records 5..6 are missing"),
]


@pytest.mark.parametrize(("case", "tamper", "message"), TAMPERING,
                         ids=[t[0] for t in TAMPERING])
def test_fail_tampering_detected(busy_ca: Path, case: str,
                                 tamper: Callable[[sqlite3.Connection], None],
                                 message: str) -> None:
    c = db(busy_ca)
    try:
        tamper(c)
    finally:
        c.close()
    proc = run("audit", "verify", "--data", str(busy_ca))
    assert_one_line_error(proc, message)


def test_fail_new_records_after_tampering_do_not_heal(busy_ca: Path) -> None:
    c = db(busy_ca)
    try:
        _edit(c)
    finally:
        c.close()
    with datadir.opened(busy_ca) as ca:
        ca.enroll(request(csr(["later.svc.internal"])))
    code, out = verify(busy_ca)
    assert code != 0 and "record 4" in out


def test_ok_link_hash_covers_every_field() -> None:
    import datetime as dt

    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = audit.link_hash(1, at, "e", "a", "s", "{}", audit.GENESIS)
    variants = [
        audit.link_hash(2, at, "e", "a", "s", "{}", audit.GENESIS),
        audit.link_hash(1, at + dt.timedelta(seconds=1), "e", "a", "s", "{}", audit.GENESIS),
        audit.link_hash(1, at, "f", "a", "s", "{}", audit.GENESIS),
        audit.link_hash(1, at, "e", "b", "s", "{}", audit.GENESIS),
        audit.link_hash(1, at, "e", "a", "t", "{}", audit.GENESIS),
        audit.link_hash(1, at, "e", "a", "s", "{ }", audit.GENESIS),
        audit.link_hash(1, at, "e", "a", "s", "{}", "1" * 64),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
