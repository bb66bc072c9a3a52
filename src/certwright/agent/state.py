"""The agent's record: one SQLite file under the state directory.

For each spec, how its certificate was enrolled (issuer, protocol, profile, account or
credential, validation method, names and where each came from, serial, dates), when it is
due next, and the history of attempts with their errors. Renewal replays the record;
``agent status`` reads it. ACME account keys live beside it, 0600.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from certwright.errors import CertwrightError, ErrorKind

DB_NAME = "agent.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrollments (
    spec TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    issuer TEXT NOT NULL,
    profile TEXT,
    validation TEXT NOT NULL,
    account TEXT,
    names TEXT NOT NULL DEFAULT '{}',
    serial TEXT,
    not_before TEXT,
    not_after TEXT,
    next_renewal TEXT,
    ari_next_check TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    retry_at TEXT,
    last_error TEXT,
    last_attempt TEXT,
    version TEXT,
    record TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    serial TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_spec ON attempts (spec, id);
CREATE TABLE IF NOT EXISTS accounts (
    directory TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    key_file TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def _ts(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def _dt(s: str | None) -> dt.datetime | None:
    return None if s is None else dt.datetime.fromisoformat(s)


@dataclasses.dataclass(frozen=True)
class Enrollment:
    spec: str
    protocol: str
    issuer: str
    profile: str | None
    validation: str
    account: str | None
    names: dict[str, list[str]]
    serial: str | None
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    next_renewal: dt.datetime | None
    ari_next_check: dt.datetime | None
    failures: int
    retry_at: dt.datetime | None
    last_error: str | None
    last_attempt: dt.datetime | None
    version: str | None
    record: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, dt.datetime):
                out[k] = _ts(v)
        return out


@dataclasses.dataclass(frozen=True)
class Attempt:
    spec: str
    at: dt.datetime
    outcome: str
    serial: str | None
    error: str | None


@dataclasses.dataclass(frozen=True)
class Account:
    directory: str
    uri: str
    key_file: Path


def prepare_state_dir(path: Path) -> None:
    """Create the state directory 0700; refuse one that others can write or that belongs
    to someone else (it holds account keys)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise CertwrightError(ErrorKind.CONFIG, f"state directory {path}: not a directory")
    if st.st_uid not in (0, os.geteuid()):
        raise CertwrightError(ErrorKind.CONFIG,
                              f"state directory {path}: owned by uid {st.st_uid}")
    if st.st_mode & 0o022:
        raise CertwrightError(ErrorKind.CONFIG,
                              f"state directory {path}: writable by group or others")


class State:
    def __init__(self, directory: Path) -> None:
        prepare_state_dir(directory)
        self.directory = directory
        db = directory / DB_NAME
        fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self.conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- enrollments ----------------------------------------------------------------------

    @staticmethod
    def _row(r: sqlite3.Row) -> Enrollment:
        return Enrollment(
            spec=r["spec"], protocol=r["protocol"], issuer=r["issuer"], profile=r["profile"],
            validation=r["validation"], account=r["account"], names=json.loads(r["names"]),
            serial=r["serial"], not_before=_dt(r["not_before"]), not_after=_dt(r["not_after"]),
            next_renewal=_dt(r["next_renewal"]), ari_next_check=_dt(r["ari_next_check"]),
            failures=r["failures"], retry_at=_dt(r["retry_at"]), last_error=r["last_error"],
            last_attempt=_dt(r["last_attempt"]), version=r["version"],
            record=json.loads(r["record"]))

    def get(self, spec: str) -> Enrollment | None:
        r = self.conn.execute("SELECT * FROM enrollments WHERE spec = ?", (spec,)).fetchone()
        return None if r is None else self._row(r)

    def all(self) -> dict[str, Enrollment]:
        return {r["spec"]: self._row(r)
                for r in self.conn.execute("SELECT * FROM enrollments ORDER BY spec")}

    def record_success(self, *, spec: str, protocol: str, issuer: str, profile: str | None,
                       validation: str, account: str | None, names: dict[str, list[str]],
                       serial: str, not_before: dt.datetime, not_after: dt.datetime,
                       next_renewal: dt.datetime, ari_next_check: dt.datetime | None,
                       version: str, record: dict[str, Any], at: dt.datetime) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO enrollments (spec, protocol, issuer, profile, validation, account,"
                " names, serial, not_before, not_after, next_renewal, ari_next_check,"
                " failures, retry_at, last_error, last_attempt, version, record)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,NULL,NULL,?,?,?)"
                " ON CONFLICT (spec) DO UPDATE SET protocol=excluded.protocol,"
                " issuer=excluded.issuer, profile=excluded.profile,"
                " validation=excluded.validation, account=excluded.account,"
                " names=excluded.names, serial=excluded.serial,"
                " not_before=excluded.not_before, not_after=excluded.not_after,"
                " next_renewal=excluded.next_renewal, ari_next_check=excluded.ari_next_check,"
                " failures=0, retry_at=NULL, last_error=NULL,"
                " last_attempt=excluded.last_attempt, version=excluded.version,"
                " record=excluded.record",
                (spec, protocol, issuer, profile, validation, account, json.dumps(names),
                 serial, _ts(not_before), _ts(not_after), _ts(next_renewal),
                 _ts(ari_next_check), _ts(at), version, json.dumps(record)))
            c.execute("INSERT INTO attempts (spec, at, outcome, serial) VALUES (?,?,?,?)",
                      (spec, _ts(at), "issued", serial))

    def record_failure(self, *, spec: str, protocol: str, issuer: str, validation: str,
                       error: str, retry_at: dt.datetime, at: dt.datetime) -> int:
        """Record a failed attempt; returns the number of consecutive failures."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO enrollments (spec, protocol, issuer, validation, failures,"
                " retry_at, last_error, last_attempt) VALUES (?,?,?,?,1,?,?,?)"
                " ON CONFLICT (spec) DO UPDATE SET failures=failures+1,"
                " retry_at=excluded.retry_at, last_error=excluded.last_error,"
                " last_attempt=excluded.last_attempt",
                (spec, protocol, issuer, validation, _ts(retry_at), error, _ts(at)))
            c.execute("INSERT INTO attempts (spec, at, outcome, error) VALUES (?,?,?,?)",
                      (spec, _ts(at), "failed", error))
            row = c.execute("SELECT failures FROM enrollments WHERE spec = ?",
                            (spec,)).fetchone()
        return int(row[0])

    def set_retry(self, spec: str, retry_at: dt.datetime) -> None:
        self.conn.execute("UPDATE enrollments SET retry_at = ? WHERE spec = ?",
                          (_ts(retry_at), spec))

    def set_next_renewal(self, spec: str, next_renewal: dt.datetime,
                         ari_next_check: dt.datetime | None) -> None:
        self.conn.execute(
            "UPDATE enrollments SET next_renewal = ?, ari_next_check = ? WHERE spec = ?",
            (_ts(next_renewal), _ts(ari_next_check), spec))

    def attempts(self, spec: str, limit: int = 20) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE spec = ? ORDER BY id DESC LIMIT ?", (spec, limit))
        return [Attempt(r["spec"], dt.datetime.fromisoformat(r["at"]), r["outcome"],
                        r["serial"], r["error"]) for r in rows]

    # -- ACME accounts --------------------------------------------------------------------

    def account(self, directory: str) -> Account | None:
        r = self.conn.execute("SELECT * FROM accounts WHERE directory = ?",
                              (directory,)).fetchone()
        return None if r is None else Account(r["directory"], r["uri"], Path(r["key_file"]))

    def save_account(self, directory: str, uri: str, key_file: Path, at: dt.datetime) -> None:
        self.conn.execute(
            "INSERT INTO accounts (directory, uri, key_file, created_at) VALUES (?,?,?,?)"
            " ON CONFLICT (directory) DO UPDATE SET uri=excluded.uri,"
            " key_file=excluded.key_file", (directory, uri, str(key_file), _ts(at)))
