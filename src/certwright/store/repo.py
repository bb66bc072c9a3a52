"""The store: rows in, domain objects out (rows are not domain objects).

Writes go through ``Store.write()``: one transaction that takes the write lock first
(``BEGIN IMMEDIATE`` on SQLite; a row lock on the audit head on PostgreSQL), so the
audit chain stays linear across processes sharing one database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from certwright.errors import CertwrightError, ErrorKind, not_found
from certwright.model.certificates import (
    CertificateRecord,
    RequestRecord,
    StoredCrl,
    format_serial,
    parse_serial,
)
from certwright.store import audit, schema
from certwright.store.audit import AuditRecord, Break
from certwright.store.engine import WriterLock, make_engine

__all__ = [
    "CA_ROOT_SETTING", "CertificateRecord", "RequestRecord", "Store", "StoredCrl",
    "format_serial", "make_engine", "parse_serial",
]

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = threading.Lock()
# The setting naming the CA a database belongs to (``Store.holder``).
CA_ROOT_SETTING = "ca_root_sha256"
_MIGRATE_LOCK_KEY = 7300171  # pg_advisory_xact_lock key: "certwright schema migration"
_HEAD_ROW_LOCK = (sa.select(schema.audit_head.c.id).where(schema.audit_head.c.id == 1)
                  .with_for_update())
_HEAD_ROW_SEED = (postgresql.insert(schema.audit_head)
                  .values(id=1, seq=0, hash=audit.GENESIS)
                  .on_conflict_do_nothing(index_elements=[schema.audit_head.c.id]))


def _cert(row: Any) -> CertificateRecord:
    return CertificateRecord(
        serial=row.serial, issuer=row.issuer, profile=row.profile, subject=row.subject,
        names=tuple(json.loads(row.names)), not_before=row.not_before,
        not_after=row.not_after, fingerprint=row.fingerprint, der=bytes(row.der),
        request_id=row.request_id, requester=row.requester, protocol=row.protocol,
        issued_at=row.issued_at, revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
    )


def _request(row: Any) -> RequestRecord:
    return RequestRecord(
        id=row.id, profile=row.profile, protocol=row.protocol, requester=row.requester,
        csr=bytes(row.csr), names=tuple(json.loads(row.names)), not_before=row.not_before,
        not_after=row.not_after, state=row.state, reason=row.reason,
        created_at=row.created_at, decided_at=row.decided_at, decided_by=row.decided_by,
        serial=row.serial,
    )


def _audit(row: Any) -> AuditRecord:
    return AuditRecord(seq=row.seq, at=row.at, event=row.event, actor=row.actor,
                       subject=row.subject, data=row.data, prev_hash=row.prev_hash,
                       hash=row.hash)


# The issuance path's statements, built once: SQLAlchemy then finds their compiled form
# in its cache without walking literal values into a cache key on every call (values are
# passed as parameters).
_AUDIT_HEAD_LOCK = (sa.select(schema.audit_head.c.seq, schema.audit_head.c.hash)
                    .where(schema.audit_head.c.id == 1).with_for_update())
_AUDIT_INSERT = schema.audit_log.insert()
_AUDIT_HEAD_UPDATE = schema.audit_head.update().where(schema.audit_head.c.id == 1)
_AUDIT_HEAD_INSERT = schema.audit_head.insert()
_CERT_INSERT = schema.certificates.insert()
_CERT_FIELDS = dataclasses.fields(CertificateRecord)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writers: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if engine.dialect.name == "sqlite":
            db = engine.url.database
            self._writers = WriterLock(
                Path(db + "-writer.lock") if db and db != ":memory:" else None)
        # The connection of the unit of work (``unit()``) open on this thread, if any.
        self._ambient = threading.local()

    @classmethod
    def open(cls, url: str, data_dir: Path | None = None) -> Store:
        return cls(make_engine(url, data_dir))

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writers, WriterLock):
            self._writers.close()

    def after_fork(self) -> None:
        """In a forked child: drop the parent's pooled connections without closing them
        (they belong to the parent); the child opens its own."""
        self.engine.dispose(close=False)

    # -- schema -------------------------------------------------------------------------

    def _alembic(self, conn: Connection) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        return cfg

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent), in one transaction.

        Several processes may migrate one database at once (replicas starting together):
        the transaction takes the write lock first (``BEGIN IMMEDIATE`` on SQLite, a
        transaction-scoped advisory lock on PostgreSQL), so one migrates and the others
        then find the schema current. Within one process, alembic keeps its running
        migration in module globals, so migrations are serialized by a lock as well.
        """
        with _MIGRATE_LOCK, self.engine.connect() as conn:
            conn = conn.execution_options(certwright_write=True)
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK_KEY})")
                command.upgrade(self._alembic(conn), "head")

    def schema_is_current(self) -> bool:
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        head = ScriptDirectory.from_config(self._alembic(None)).get_current_head()  # type: ignore[arg-type]
        return current == head

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def unit(self) -> Iterator[Connection]:
        """One write transaction around a whole request (a unit of work).

        Until the block ends, ``read()``, ``state_write()`` and, on SQLite, ``write()``
        called on this thread run inside it instead of opening transactions of their own:
        a request costs one durable commit and one connection checkout instead of one per
        step, and every step sees the steps before it. The unit commits when the block
        ends normally, rolls back when it raises, and nothing it wrote is visible to others
        before the commit, so the caller must answer the request only after the block.
        Units do not nest.
        """
        if getattr(self._ambient, "conn", None) is not None:
            raise RuntimeError("Store.unit() does not nest")
        with self._writers, self.engine.connect() as conn:
            conn = conn.execution_options(certwright_write=True)
            with conn.begin():
                self._ambient.conn = conn
                try:
                    yield conn
                finally:
                    self._ambient.conn = None

    def _unit_conn(self) -> Connection | None:
        conn: Connection | None = getattr(self._ambient, "conn", None)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, committed durably when the block ends without error.

        Inside a ``unit()`` on SQLite it is a savepoint of the unit (the unit already holds
        the write lock; it commits them together). On PostgreSQL it stays a transaction of
        its own even then: it takes the audit head lock, and a unit that waited for that
        lock while holding row locks of its own could deadlock with another replica."""
        unit = self._unit_conn()
        if unit is not None and unit.dialect.name == "sqlite":
            with unit.begin_nested():
                yield unit
            return
        with self._writers, self.engine.connect() as conn:
            conn = conn.execution_options(certwright_write=True)
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    self._lock_audit_head(conn)
                yield conn

    @contextlib.contextmanager
    def state_write(self, *, savepoint: bool = False) -> Iterator[Connection]:
        """A write transaction for protocol state (nonces, orders...) that writes no audit
        record, so on PostgreSQL it skips the audit lock and does not queue behind
        issuance. Its statements must resolve races themselves (conditional UPDATEs,
        unique keys); ``append_audit`` must not be called inside it. Inside a ``unit()``
        it is the unit's transaction; with ``savepoint`` a savepoint in it, for a caller
        that catches a failed statement (IntegrityError) and goes on, since PostgreSQL
        refuses every later statement of a transaction in which one failed."""
        unit = self._unit_conn()
        if unit is not None:
            if savepoint:
                with unit.begin_nested():
                    yield unit
            else:
                yield unit
            return
        with self._writers, self.engine.connect() as conn:
            conn = conn.execution_options(certwright_write=True)
            with conn.begin():
                yield conn

    def _lock_audit_head(self, conn: Connection) -> None:
        """Take PostgreSQL's write lock: the audit head row, before anything else.

        Every write transaction takes this one lock first, so writers queue in one
        order: no deadlock between, say, a rejection that would lock the request row
        before the head and an approval that would lock them the other way round, and
        under READ COMMITTED each statement after the lock sees every earlier writer's
        commit. The row is seeded by migration 0002; a store that lacks it gets it here,
        race-free: a concurrent INSERT ... ON CONFLICT DO NOTHING waits for the first
        inserter's commit instead of both starting the chain at seq 1.
        """
        if conn.execute(_HEAD_ROW_LOCK).first() is None:
            conn.execute(_HEAD_ROW_SEED)
            conn.execute(_HEAD_ROW_LOCK).one()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        unit = self._unit_conn()
        if unit is not None:
            yield unit  # it sees what the unit wrote so far
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- audit --------------------------------------------------------------------------

    def append_audit(
        self,
        conn: Connection,
        event: str,
        *,
        actor: str,
        subject: str,
        data: dict[str, Any],
        at: dt.datetime,
    ) -> AuditRecord:
        """Append one record to the chain inside the caller's write transaction."""
        head = conn.execute(_AUDIT_HEAD_LOCK).first()
        seq, prev = (head.seq + 1, head.hash) if head else (1, audit.GENESIS)
        at = at.astimezone(dt.UTC).replace(microsecond=0)
        text = audit.canonical_json(data)
        h = audit.link_hash(seq, at, event, actor, subject, text, prev)
        conn.execute(_AUDIT_INSERT, {"seq": seq, "at": at, "event": event, "actor": actor,
                                     "subject": subject, "data": text, "prev_hash": prev,
                                     "hash": h})
        if head:
            conn.execute(_AUDIT_HEAD_UPDATE, {"seq": seq, "hash": h})
        else:
            conn.execute(_AUDIT_HEAD_INSERT, {"id": 1, "seq": seq, "hash": h})
        return AuditRecord(seq, at, event, actor, subject, text, prev, h)

    def audit(self, event: str, *, actor: str, subject: str, data: dict[str, Any],
              at: dt.datetime) -> AuditRecord:
        with self.write() as conn:
            return self.append_audit(conn, event, actor=actor, subject=subject, data=data,
                                     at=at)

    def iter_audit(self, batch: int = 5000) -> Iterator[AuditRecord]:
        last = 0
        while True:
            with self.read() as conn:
                rows = conn.execute(
                    sa.select(schema.audit_log).where(schema.audit_log.c.seq > last)
                    .order_by(schema.audit_log.c.seq).limit(batch)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _audit(row)
            last = rows[-1].seq

    def audit_head(self) -> tuple[int, str] | None:
        with self.read() as conn:
            row = conn.execute(sa.select(schema.audit_head).where(schema.audit_head.c.id == 1)
                               ).first()
        return (row.seq, row.hash) if row else None

    def verify_audit(self) -> tuple[int, Break | None]:
        """Walk the whole chain and compare it with the head, both from one snapshot.

        Read separately, a record appended between reading the head and reading the
        records looks exactly like tampering ("the head does not match the last
        record"), so a verifier beside a live server raised false alarms. SQLite keeps
        one snapshot for a read transaction; PostgreSQL needs REPEATABLE READ for that.
        """
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                head = conn.execute(sa.select(schema.audit_head.c.seq, schema.audit_head.c.hash)
                                    .where(schema.audit_head.c.id == 1)).first()
                rows = conn.execute(sa.select(schema.audit_log).order_by(schema.audit_log.c.seq)
                                    .execution_options(yield_per=5000))
                try:
                    return audit.verify((_audit(r) for r in rows),
                                        (head.seq, head.hash) if head else None)
                finally:
                    rows.close()  # verify stops at the first break; free the cursor

    # -- certificates -------------------------------------------------------------------

    def insert_certificate(self, conn: Connection, rec: CertificateRecord) -> None:
        values = {f.name: getattr(rec, f.name) for f in _CERT_FIELDS}  # shallow: no deepcopy
        values["names"] = json.dumps(list(rec.names))
        conn.execute(_CERT_INSERT, values)

    def certificate(self, serial: str) -> CertificateRecord:
        with self.read() as conn:
            row = conn.execute(
                sa.select(schema.certificates).where(schema.certificates.c.serial == serial)
            ).first()
        if row is None:
            raise not_found(f"no certificate with serial {serial}")
        return _cert(row)

    def find_certificate(self, serial: str) -> CertificateRecord | None:
        try:
            return self.certificate(serial)
        except CertwrightError:
            return None

    def certificates(
        self, *, profile: str | None = None, revoked: bool | None = None,
        expiring_before: dt.datetime | None = None, limit: int = 1000,
    ) -> list[CertificateRecord]:
        q = sa.select(schema.certificates).order_by(schema.certificates.c.issued_at.desc())
        if profile is not None:
            q = q.where(schema.certificates.c.profile == profile)
        if revoked is True:
            q = q.where(schema.certificates.c.revoked_at.is_not(None))
        elif revoked is False:
            q = q.where(schema.certificates.c.revoked_at.is_(None))
        if expiring_before is not None:
            q = q.where(schema.certificates.c.not_after < expiring_before)
        with self.read() as conn:
            return [_cert(r) for r in conn.execute(q.limit(limit))]

    def revoked_serials(self, issuer: str) -> list[tuple[str, dt.datetime, str | None]]:
        c = schema.certificates.c
        q = (sa.select(c.serial, c.revoked_at, c.revocation_reason)
             .where(c.issuer == issuer, c.revoked_at.is_not(None)))
        with self.read() as conn:
            return [(r.serial, r.revoked_at, r.revocation_reason) for r in conn.execute(q)]

    def mark_revoked(self, conn: Connection, serial: str, at: dt.datetime,
                     reason: str | None) -> CertificateRecord:
        c = schema.certificates.c
        row = conn.execute(sa.select(schema.certificates).where(c.serial == serial)
                           .with_for_update()).first()
        if row is None:
            raise not_found(f"no certificate with serial {serial}")
        if row.revoked_at is not None:
            raise CertwrightError(ErrorKind.CONFLICT,
                                  f"certificate {serial} is already revoked")
        conn.execute(schema.certificates.update().where(c.serial == serial)
                     .values(revoked_at=at, revocation_reason=reason))
        return dataclasses.replace(_cert(row), revoked_at=at, revocation_reason=reason)

    def count_certificates(self) -> int:
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(
                schema.certificates)).scalar_one())

    # -- requests -----------------------------------------------------------------------

    def insert_request(self, conn: Connection, rec: RequestRecord) -> None:
        values = dataclasses.asdict(rec)
        values["names"] = json.dumps(list(rec.names))
        conn.execute(schema.requests.insert().values(**values))

    def request(self, request_id: str, conn: Connection | None = None,
                *, lock: bool = False) -> RequestRecord:
        q = sa.select(schema.requests).where(schema.requests.c.id == request_id)
        if lock:
            q = q.with_for_update()
        if conn is None:
            with self.read() as c:
                row = c.execute(q).first()
        else:
            row = conn.execute(q).first()
        if row is None:
            raise not_found(f"no request with id {request_id}")
        return _request(row)

    def requests(self, state: str | None = None, limit: int = 1000) -> list[RequestRecord]:
        q = sa.select(schema.requests).order_by(schema.requests.c.created_at)
        if state is not None:
            q = q.where(schema.requests.c.state == state)
        with self.read() as conn:
            return [_request(r) for r in conn.execute(q.limit(limit))]

    def update_request(self, conn: Connection, request_id: str, **values: Any) -> None:
        conn.execute(schema.requests.update().where(schema.requests.c.id == request_id)
                     .values(**values))

    # -- CRLs and settings --------------------------------------------------------------

    def crl(self, issuer: str) -> StoredCrl | None:
        with self.read() as conn:
            row = conn.execute(sa.select(schema.crls).where(schema.crls.c.issuer == issuer)
                               ).first()
        if row is None:
            return None
        return StoredCrl(row.issuer, row.number, row.this_update, row.next_update,
                         bytes(row.der))

    def next_crl_number(self, conn: Connection, issuer: str) -> int:
        row = conn.execute(sa.select(schema.crls.c.number).where(schema.crls.c.issuer == issuer)
                           .with_for_update()).first()
        return 1 if row is None else int(row.number) + 1

    def put_crl(self, conn: Connection, crl: StoredCrl) -> None:
        values = dataclasses.asdict(crl)
        updated = conn.execute(schema.crls.update().where(schema.crls.c.issuer == crl.issuer)
                               .values(**values))
        if updated.rowcount == 0:
            conn.execute(schema.crls.insert().values(**values))

    def setting(self, key: str, conn: Connection | None = None) -> str | None:
        q = sa.select(schema.settings.c.value).where(schema.settings.c.key == key)
        if conn is not None:
            return conn.execute(q).scalar_one_or_none()
        with self.read() as c:
            return c.execute(q).scalar_one_or_none()

    def put_setting(self, conn: Connection, key: str, value: str) -> None:
        updated = conn.execute(schema.settings.update().where(schema.settings.c.key == key)
                               .values(value=value))
        if updated.rowcount == 0:
            conn.execute(schema.settings.insert().values(key=key, value=value))

    def holder(self, conn: Connection) -> str | None:
        """The SHA-256 fingerprint (hex) of the root of the CA this database belongs to:
        the setting ``CA_ROOT_SETTING`` that ``init`` writes or, in a database older than
        that setting, the root its first ``ca.initialized`` audit record names. None when
        no CA holds it yet (no schema at all, or an empty one)."""
        if not sa.inspect(conn).has_table(schema.settings.name):
            return None
        recorded = self.setting(CA_ROOT_SETTING, conn)
        if recorded:
            return recorded
        first = conn.execute(
            sa.select(schema.audit_log.c.data).where(schema.audit_log.c.event == "ca.initialized")
            .order_by(schema.audit_log.c.seq).limit(1)).scalar_one_or_none()
        root = json.loads(first).get("root") if first is not None else None
        return root if isinstance(root, str) and root else None


def names_json(names: Sequence[str]) -> str:
    return json.dumps(list(names))
