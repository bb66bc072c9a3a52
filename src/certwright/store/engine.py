"""Opening the database: the engine for a store URL (SQLite in the data directory or
PostgreSQL), and the lock SQLite's writers queue on across processes."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from certwright.errors import config_error

__all__ = ["WriterLock", "make_engine"]


def make_engine(url: str, data_dir: Path | None = None) -> Engine:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:" and data_dir is not None:
            url = f"sqlite:///{(data_dir / rel).resolve()}"
    try:
        u = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise config_error(f"store.url {url!r} is not a database URL") from None
    if u.get_backend_name() == "sqlite":
        engine = sa.create_engine(u, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN, so writers can ask for IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before it returns; a certificate is handed out
            # only after the transaction that records it (and its audit record) is durable.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            if conn.get_execution_options().get("certwright_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        return sa.create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=20)
    raise config_error(f"store.url: {u.get_backend_name()} is not supported "
                       "(use sqlite:/// or postgresql://)")


class WriterLock:
    """SQLite admits one writer at a time. Writers queue here, in order, instead of in
    SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between retries and makes the
    slowest requests wait far longer than the work in front of them.

    Threads of one process queue on a re-entrant lock; processes sharing the database
    file (``serve --workers``, several servers on one data directory) on an exclusive
    ``flock`` of ``<database>-writer.lock``, which the kernel hands to the next waiter the
    moment it is released. The lock file is opened per process (after a fork the child
    opens its own: an inherited descriptor would share the parent's lock). SQLite's own
    lock stays the rule; this only decides who asks for it next.
    """

    def __init__(self, lock_path: Path | None) -> None:
        self._threads = threading.RLock()
        self._path = lock_path
        self._fd: int | None = None
        self._pid = 0
        self._depth = 0

    def __enter__(self) -> None:
        self._threads.acquire()
        self._depth += 1
        if self._depth == 1 and self._path is not None:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._depth -= 1
                self._threads.release()
                raise

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                               | os.O_NOFOLLOW, 0o600)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
