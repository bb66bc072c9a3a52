"""A real PostgreSQL server for the tests, and store fixtures over SQLite and PostgreSQL.

The server is started once per session with the distribution's ``initdb``/``pg_ctl``
(Debian package ``postgresql``) in a temporary directory: loopback TCP on a free port,
the Unix socket in that directory, trust authentication (initdb's ``--auth=trust`` only
admits local sockets and 127.0.0.1/::1). ``initdb`` refuses to run as root, so under root
both programs run as the ``postgres`` user. Every test gets its own database.

Set CERTWRIGHT_TEST_PG_URL (``postgresql://user@host:port/db``, a role that may create
databases) to use an existing server instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from certwright.ca import datadir
from certwright.ca.service import CertificateAuthority
from certwright.clock import FakeClock

from .conftest import lint_and_verify, require_peer

PG_URL_ENV = "CERTWRIGHT_TEST_PG_URL"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """Creates and drops databases on one server; ``url(db)`` is a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.base = sa.make_url(url).set(drivername="postgresql")

    def url(self, database: str) -> str:
        return self.base.set(database=database).render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(self.base.database or "postgres"), autocommit=True,
                               connect_timeout=10)

    def create_database(self) -> str:
        name = f"cw_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _LocalServer:
    """initdb + pg_ctl in a temporary directory, as ``postgres`` when we are root."""

    def __init__(self) -> None:
        self.initdb = require_peer("initdb", "postgresql")
        self.pg_ctl = str(Path(self.initdb).with_name("pg_ctl"))
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="certwright-pg-"))
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120,
                              check=False, cwd=self.dir)

    def start(self) -> str:
        proc = self._run(self.initdb, "--pgdata", str(self.data), "--username", "postgres",
                         "--auth", "trust", "--encoding", "UTF8", "--no-locale",
                         "--no-sync", "--no-instructions")
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stdout}{proc.stderr}")
        for _attempt in range(3):
            self.port = _free_port()
            options = " ".join([
                "-c listen_addresses=127.0.0.1", f"-c port={self.port}",
                f"-c unix_socket_directories={self.dir}",
                # A throwaway cluster: durability is not what is under test here.
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                "-c max_connections=200",
            ])
            proc = self._run(self.pg_ctl, "start", "--wait", "--timeout", "60",
                             "--pgdata", str(self.data), "--log", str(self.log),
                             "-o", options)
            if proc.returncode == 0:
                self.started = True
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        log = self.log.read_text() if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}\n{log}")

    def stop(self) -> None:
        try:
            if self.started:
                self._run(self.pg_ctl, "stop", "--wait", "--mode", "fast",
                          "--pgdata", str(self.data))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this session (started on first use)."""
    external = os.environ.get(PG_URL_ENV)
    if external:
        yield PgServer(external)
        return
    local = _LocalServer()
    try:
        yield PgServer(local.start())
    finally:
        local.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store_ca_dir(tmp_path: Path, store_url: str) -> Iterator[Path]:
    """A CA directory whose store is ``store_url``; its certificates are checked at the end."""
    data = tmp_path / "ca"
    datadir.init(data, http="127.0.0.1:8080", https="127.0.0.1:8443", store_url=store_url)
    yield data
    lint_and_verify(data)


@pytest.fixture
def store_ca(store_ca_dir: Path, clock: FakeClock) -> Iterator[CertificateAuthority]:
    with datadir.opened(store_ca_dir, clock=clock) as opened:
        yield opened
