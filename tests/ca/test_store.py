"""The store on both backends: SQLite (a file, WAL) and a real PostgreSQL server.

Every test runs once per backend (``store_url`` is parametrized in tests/pg.py). What is
checked is what DESIGN.md promises of the store: schema changes through migrations that
match the tables, serial uniqueness enforced by the database, a certificate and its
audit record committed together or not at all, and an audit chain that stays linear and
gap-free when threads, processes and operators write at the same time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.ca import credentials, datadir, policy
from certwright.ca.authority import AuditContext
from certwright.ca.credentials import CredentialRefused, Credentials
from certwright.ca.revocation import Reason
from certwright.ca.service import CertificateAuthority, Held, Issued
from certwright.ca.transactions import Transactions
from certwright.clock import FakeClock
from certwright.errors import CertwrightError, ErrorKind
from certwright.est.enroll import SEAL_CONTEXT, transaction_id
from certwright.store import audit, schema
from certwright.store.repo import CertificateRecord, Store
from tests.cli import CERTWRIGHT, run
from tests.helpers import csr, csr_pem, request


@contextlib.contextmanager
def open_store(url: str) -> Iterator[Store]:
    store = Store.open(url)
    try:
        yield store
    finally:
        store.close()


def run_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in n threads released together; return results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer hung"
    return results


def events(store: Store) -> list[tuple[str, str]]:
    return [(r.event, r.subject) for r in store.iter_audit()]


def assert_chain(store: Store, expected_records: int) -> None:
    count, broken = store.verify_audit()
    assert broken is None, str(broken)
    assert count == expected_records
    seqs = [r.seq for r in store.iter_audit()]
    assert seqs == list(range(1, expected_records + 1))


def sample_record(serial: str = "1a2b3c", **changes: Any) -> CertificateRecord:
    der = b"\x30\x03\x02\x01" + serial.encode()
    rec = CertificateRecord(
        serial=serial, issuer="issuer-1", profile="tls-server", subject="CN=a.svc.internal",
        names=("dns:a.svc.internal",), not_before=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2026, 4, 1, tzinfo=dt.UTC),
        fingerprint=hashlib.sha256(der).hexdigest(), der=der, request_id=None,
        requester="test:pytest", protocol="cli", issued_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    return dataclasses.replace(rec, **changes)


# -- (a), (h) migrations -------------------------------------------------------------------


def test_ok_schema_is_current_only_after_migrate(store_url: str) -> None:
    with open_store(store_url) as store:
        assert store.schema_is_current() is False
        store.migrate()
        assert store.schema_is_current() is True


def test_ok_migrations_match_schema_module(store_url: str) -> None:
    with open_store(store_url) as store:
        store.migrate()
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, schema.metadata)
        assert diff == [], "migrations and schema.py disagree; add a migration"


def test_ok_migrate_twice_is_a_no_op(store_url: str) -> None:
    with open_store(store_url) as store:
        store.migrate()
        store.audit("test.event", actor="a", subject="s", data={}, at=dt.datetime.now(dt.UTC))
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement.strip().split(None, 1)[0].upper())

        sa.event.listen(store.engine, "before_cursor_execute", record)
        try:
            store.migrate()
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", record)
        changed = [s for s in statements if s in {"CREATE", "ALTER", "DROP", "INSERT",
                                                    "UPDATE", "DELETE"}]
        assert "SELECT" in statements  # the listener saw the version check
        assert changed == []
        assert store.schema_is_current()
        assert_chain(store, 1)


def _migrate_to(store: Store, revision: str, *, down: bool = False) -> None:
    with store.engine.connect() as conn, conn.begin():
        step = command.downgrade if down else command.upgrade
        step(store._alembic(conn), revision)


def test_ok_migration_0007_moves_est_credentials_and_held_requests(store_url: str) -> None:
    """What EST kept in its own tables (0005) moves to the shared credentials and
    transactions: a password a user holds still authenticates, and a server-generated
    key held for an operator still opens with it."""
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    password = credentials.new_secret()
    spki = hashlib.sha256(b"spki").hexdigest()
    # As certwright.est sealed a held key before 0007.
    sealed = credentials.seal(b"pkcs8", password, context=SEAL_CONTEXT, bound_to="r1")
    with open_store(store_url) as store:
        _migrate_to(store, "0006")
        with store.engine.connect() as conn, conn.begin():
            for name, one_time, used in (("sensor-1", False, None), ("once", True, at)):
                conn.execute(sa.text(
                    "INSERT INTO est_credentials (name, profile, secret, one_time, "
                    "expires_at, used_at, created_at) VALUES (:n, 'device', :s, :o, NULL, "
                    ":u, :c)").bindparams(sa.bindparam("u", type_=schema.UtcDateTime()),
                                          sa.bindparam("c", type_=schema.UtcDateTime())),
                    {"n": name, "s": credentials.hash_secret(password), "o": one_time,
                     "u": used, "c": at})
            conn.execute(sa.text(
                "INSERT INTO est_requests (request_id, profile, requester, spki_sha256, "
                "operation, wrapped_key, created_at) VALUES ('r1', 'device', "
                "'est-credential:sensor-1', :k, 'serverkeygen', :w, :c)"
            ).bindparams(sa.bindparam("w", type_=sa.LargeBinary),
                         sa.bindparam("c", type_=schema.UtcDateTime())),
                {"k": spki, "w": sealed, "c": at})
        store.migrate()
        assert store.schema_is_current()

        clock = FakeClock(at + dt.timedelta(days=1))
        est = Credentials(store, clock, "est")
        moved = est.verify("sensor-1", password, profile="device", client="test")
        assert (moved.profile, moved.one_time, moved.spent()) == ("device", False, False)
        once = est.verify("once", password, profile=None, client="test")
        assert once.spent() and once.used_at == at
        with pytest.raises(CredentialRefused):
            est.verify("sensor-1", "not the password", profile=None, client="test")
        assert Credentials(store, clock, "scep").get("sensor-1") is None

        held = Transactions(store, clock, "est").find(
            "device", "est-credential:sensor-1", transaction_id("serverkeygen", spki))
        assert held is not None
        assert (held.request_id, held.operation, held.created_at) == ("r1", "serverkeygen", at)
        assert held.sealed_key is not None
        assert credentials.unseal(held.sealed_key, password, context=SEAL_CONTEXT,
                                  bound_to="r1") == b"pkcs8"

        # And back: 0006's tables hold the same rows again.
        _migrate_to(store, "0006", down=True)
        with store.engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM est_credentials ORDER BY name"))
            assert [r[0] for r in names] == ["once", "sensor-1"]
            back = conn.execute(sa.text("SELECT spki_sha256, operation FROM est_requests"))
            assert back.all() == [(spki, "serverkeygen")]



MIGRATE = ("import sys; from certwright.store.repo import Store; "
           "s = Store.open(sys.argv[1]); s.migrate(); s.close()")


def test_ok_concurrent_migrate(store_url: str) -> None:
    # Replicas starting together against one fresh database (processes), and threads of
    # one process: one migrates, the others wait and then find the schema current.
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, store_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    stores = [Store.open(store_url) for _ in range(2)]
    try:
        results = run_threads(2, lambda i: stores[i].migrate())
        outcomes = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
        assert results == [None, None]
        assert outcomes == [(0, ""), (0, "")]
        assert all(s.schema_is_current() for s in stores)
        with stores[0].read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert stores[0].audit_head() == (0, audit.GENESIS)
    finally:
        for s in stores:
            s.close()


# -- (b) serial uniqueness -----------------------------------------------------------------


def test_fail_duplicate_serial_rejected_by_the_store(store_url: str) -> None:
    with open_store(store_url) as store:
        store.migrate()
        first = sample_record()
        with store.write() as conn:
            store.insert_certificate(conn, first)
        twin = sample_record(der=b"other", fingerprint="f" * 64, subject="CN=b.svc.internal")
        with pytest.raises(sa.exc.IntegrityError), store.write() as conn:
            store.append_audit(conn, "certificate.issued", actor="t", subject=twin.serial,
                               data={}, at=twin.issued_at)
            store.insert_certificate(conn, twin)
        assert store.count_certificates() == 1
        assert store.certificate(first.serial) == first
        assert_chain(store, 0)


def test_ok_serial_collision_is_retried_with_a_new_serial(
    store_ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = store_ca
    taken = ca.enroll(request(csr(["a.svc.internal"])))
    assert isinstance(taken, Issued)
    serials = iter([int(taken.record.serial, 16), 0x7E57])
    monkeypatch.setattr("certwright.ca.authority.new_serial", lambda: next(serials))
    before = ca.store.verify_audit()[0]
    again = ca.enroll(request(csr(["b.svc.internal"])))
    assert isinstance(again, Issued)
    assert again.record.serial == "7e57"
    assert again.certificate.serial_number == 0x7E57
    assert ca.store.count_certificates() == 2
    assert ca.store.certificate(taken.record.serial).names == ("dns:a.svc.internal",)
    assert_chain(ca.store, before + 1)


# -- (c) certificate and audit record in one transaction -----------------------------------


def test_fail_issue_rolls_back_certificate_and_audit_together(
    store_ca: CertificateAuthority,
) -> None:
    ca = store_ca
    before = ca.store.verify_audit()[0]
    decision = policy.decide(ca.config, request(csr()), ca.clock.now())
    assert isinstance(decision, policy.Issue)
    prepared = ca.authority.prepare(decision)
    serial = format(prepared.template.serial, "x")

    def explode(conn: Any, record: CertificateRecord) -> None:
        assert record.serial == serial
        raise RuntimeError("on_commit failed")

    with pytest.raises(RuntimeError, match="on_commit failed"):
        ca.authority.issue(prepared, AuditContext(actor="t", protocol="cli",
                                                  requester="test:pytest"),
                           on_commit=explode)
    assert ca.store.find_certificate(serial) is None
    assert ca.store.count_certificates() == 0
    assert ("certificate.issued", serial) not in events(ca.store)
    assert_chain(ca.store, before)


def test_fail_approve_rolls_back_certificate_and_audit_together(
    store_ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = store_ca
    held = ca.enroll(request(csr(["pump1.devices.internal"]), profile="device"))
    assert isinstance(held, Held)
    before = ca.store.verify_audit()[0]
    original = ca.store.update_request

    def fail_update(conn: Any, request_id: str, **values: Any) -> None:
        original(conn, request_id, **values)  # the request row is changed, then...
        raise RuntimeError("crash inside the approval transaction")

    monkeypatch.setattr(ca.store, "update_request", fail_update)
    with pytest.raises(RuntimeError, match="crash inside"):
        ca.approve(held.request_id, "alice")
    monkeypatch.undo()
    assert ca.store.count_certificates() == 0
    assert ca.store.request(held.request_id).state == "pending"
    assert [e for e, _ in events(ca.store)][before:] == []
    assert_chain(ca.store, before)
    # The request can still be approved afterwards.
    issued = ca.approve(held.request_id, "alice")
    assert ca.store.request(held.request_id).serial == issued.record.serial
    assert_chain(ca.store, before + 2)


# -- (d) concurrent issuance ---------------------------------------------------------------

THREADS = 8


def test_ok_concurrent_threads_issue(store_ca: CertificateAuthority) -> None:
    ca = store_ca
    before = ca.store.verify_audit()[0]
    results = run_threads(THREADS, lambda i: ca.enroll(request(csr([f"t{i}.svc.internal"]))))
    errors = [r for r in results if not isinstance(r, Issued)]
    assert errors == []
    serials = {r.record.serial for r in results}
    assert len(serials) == THREADS
    assert ca.store.count_certificates() == THREADS
    assert_chain(ca.store, before + THREADS)
    issued = [s for e, s in events(ca.store) if e == "certificate.issued"]
    assert sorted(issued) == sorted(serials)


PROCESSES = 3


def test_ok_concurrent_processes_issue(store_ca_dir: Path, tmp_path: Path) -> None:
    """Separate processes (as replicas would be) running `certwright issue` at once."""
    csrs = [tmp_path / f"p{i}.csr" for i in range(PROCESSES)]
    for i, path in enumerate(csrs):
        path.write_bytes(csr_pem([f"p{i}.svc.internal"]))
    procs = [
        subprocess.Popen([CERTWRIGHT, "issue", "--data", str(store_ca_dir), "--csr", str(c),
                          "--out", str(c.with_suffix(".pem")), "--operator", f"op{i}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, c in enumerate(csrs)
    ]
    outcomes = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        outcomes.append((p.returncode, err))
    assert all(code == 0 for code, _ in outcomes), outcomes
    with datadir.opened(store_ca_dir) as ca:
        certs = ca.store.certificates()
        assert len({c.serial for c in certs}) == PROCESSES == len(certs)
        # ca.initialized, config.loaded, one certificate.issued per process.
        assert_chain(ca.store, 2 + PROCESSES)
    for c in csrs:
        leaf = x509.load_pem_x509_certificate(c.with_suffix(".pem").read_bytes())
        assert format(leaf.serial_number, "x") in {r.serial for r in certs}


@pytest.mark.parametrize("head", ["seeded", "missing"])
def test_ok_concurrent_first_appends_do_not_fork_the_chain(store_url: str, head: str) -> None:
    # Several replicas writing the very first records of a fresh store. "missing": the
    # head row is absent, as in a store created before the head row was seeded.
    stores = [Store.open(store_url) for _ in range(4)]
    try:
        stores[0].migrate()
        if head == "missing":
            with stores[0].write() as conn:
                conn.execute(schema.audit_head.delete())
        for s in stores:
            s.audit_head()  # connected and warmed up, so the appends really overlap
        now = dt.datetime.now(dt.UTC)
        results = run_threads(4, lambda i: stores[i].audit("test.first", actor=f"r{i}",
                                                           subject="s", data={}, at=now))
        assert all(isinstance(r, audit.AuditRecord) for r in results), results
        assert sorted(r.seq for r in results) == [1, 2, 3, 4]
        assert_chain(stores[0], 4)
    finally:
        for s in stores:
            s.close()


def test_ok_verify_while_writers_append(store_url: str) -> None:
    """A verifier running beside live writers sees a consistent chain, never a false break."""
    with open_store(store_url) as writer, open_store(store_url) as verifier:
        writer.migrate()
        done = threading.Event()
        appended = 0

        def write() -> None:
            nonlocal appended
            try:
                while not done.is_set() and appended < 200:
                    writer.audit("test.live", actor="w", subject=str(appended), data={},
                                 at=dt.datetime.now(dt.UTC))
                    appended += 1
            finally:
                done.set()

        t = threading.Thread(target=write)
        t.start()
        try:
            reports = []
            while not done.is_set():
                reports.append(verifier.verify_audit())
        finally:
            done.set()
            t.join(timeout=60)
        assert reports and all(broken is None for _, broken in reports), [
            str(b) for _, b in reports if b is not None][:3]
        assert_chain(verifier, appended)


@pytest.mark.parametrize(("tamper", "message"), [
    ("DELETE FROM audit_log WHERE seq = 3", "record 3 is missing (next is 4)"),
    ("DELETE FROM audit_log WHERE seq >= 4", "records 4..5 are missing"),
    ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", "contents do not match"),
], ids=["delete", "truncate", "edit"])
def test_fail_tampering_detected(store_url: str, tamper: str, message: str) -> None:
    with open_store(store_url) as store:
        store.migrate()
        for i in range(5):
            store.audit("test.event", actor="a", subject=str(i), data={"i": i},
                        at=dt.datetime.now(dt.UTC))
        with store.write() as conn:
            conn.execute(sa.text(tamper))
        _, broken = store.verify_audit()
        assert broken is not None and message in str(broken)


# -- (e) two operators approving at once ---------------------------------------------------


@contextlib.contextmanager
def second_operator(data: Path, clock: FakeClock) -> Iterator[CertificateAuthority]:
    """Another CA instance on the same data (another replica, another operator)."""
    with datadir.opened(data, clock=clock) as ca:
        yield ca


def test_fail_two_operators_approve_the_same_request(
    store_ca: CertificateAuthority, store_ca_dir: Path, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = store_ca.enroll(request(csr(["pump2.devices.internal"]), profile="device"))
    assert isinstance(held, Held)
    before = store_ca.store.verify_audit()[0]
    with second_operator(store_ca_dir, clock) as other:
        cas = [store_ca, other]
        # Both see the request pending before either issues: the worst interleaving.
        both_read = threading.Barrier(2)
        for ca in cas:
            original = ca._pending

            def pending(request_id: str, original: Any = original) -> Any:
                rec = original(request_id)
                both_read.wait(timeout=30)
                return rec

            monkeypatch.setattr(ca, "_pending", pending)
        results = run_threads(2, lambda i: cas[i].approve(held.request_id, ["alice", "bob"][i]))
    wins = [r for r in results if isinstance(r, Issued)]
    losses = [r for r in results if isinstance(r, CertwrightError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert losses[0].kind is ErrorKind.CONFLICT
    assert store_ca.store.count_certificates() == 1
    rec = store_ca.store.request(held.request_id)
    assert rec.state == "issued" and rec.serial == wins[0].record.serial
    assert [e for e, _ in events(store_ca.store)][before:] == ["certificate.issued",
                                                               "request.approved"]
    assert_chain(store_ca.store, before + 2)


def test_fail_approve_and_reject_at_once(
    store_ca: CertificateAuthority, store_ca_dir: Path, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An approval and a rejection racing: one wins, the other is a CONFLICT, no deadlock.

    The hooks force the order that deadlocks when locks are taken in different orders:
    the rejection locks the request row first, the approval the audit head first.
    """
    held = store_ca.enroll(request(csr(["pump3.devices.internal"]), profile="device"))
    assert isinstance(held, Held)
    before = store_ca.store.verify_audit()[0]
    request_locked = threading.Event()
    head_locked = threading.Event()
    with second_operator(store_ca_dir, clock) as approver:
        rejecter = store_ca
        orig_request = rejecter.store.request

        def locked_request(request_id: str, conn: Any = None, *, lock: bool = False) -> Any:
            rec = orig_request(request_id, conn, lock=lock)
            if lock:
                request_locked.set()
                head_locked.wait(timeout=0.5)
            return rec

        monkeypatch.setattr(rejecter.store, "request", locked_request)
        orig_append = approver.store.append_audit

        def append(conn: Any, event: str, **kw: Any) -> Any:
            if event == "certificate.issued":
                request_locked.wait(timeout=0.5)
            rec = orig_append(conn, event, **kw)
            head_locked.set()
            return rec

        monkeypatch.setattr(approver.store, "append_audit", append)

        def act(i: int) -> Any:
            if i == 0:
                return rejecter.reject(held.request_id, "carol", "not ours")
            return approver.approve(held.request_id, "dave")

        results = run_threads(2, act)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    assert isinstance(errors[0], CertwrightError) and errors[0].kind is ErrorKind.CONFLICT, (
        repr(errors[0]))
    state = store_ca.store.request(held.request_id).state
    assert state in {"issued", "rejected"}
    assert store_ca.store.count_certificates() == (1 if state == "issued" else 0)
    assert_chain(store_ca.store, before + (2 if state == "issued" else 1))


# -- (f) revocation ------------------------------------------------------------------------


def test_fail_revoke_twice_is_a_conflict(store_ca: CertificateAuthority) -> None:
    ca = store_ca
    issued = ca.enroll(request(csr()))
    assert isinstance(issued, Issued)
    rec = ca.revoke(issued.record.serial, Reason.key_compromise, "alice")
    assert rec.revoked and rec.revocation_reason == "keyCompromise"
    before = ca.store.verify_audit()[0]
    with pytest.raises(CertwrightError) as e:
        ca.revoke(issued.record.serial, Reason.superseded, "bob")
    assert e.value.kind is ErrorKind.CONFLICT
    stored = ca.store.certificate(issued.record.serial)
    assert stored.revocation_reason == "keyCompromise" and stored.revoked_at == rec.revoked_at
    assert_chain(ca.store, before)


def test_fail_revoke_at_once_revokes_once(
    store_ca: CertificateAuthority, store_ca_dir: Path, clock: FakeClock
) -> None:
    issued = store_ca.enroll(request(csr()))
    assert isinstance(issued, Issued)
    before = store_ca.store.verify_audit()[0]
    with second_operator(store_ca_dir, clock) as other:
        cas = [store_ca, other]
        results = run_threads(2, lambda i: cas[i].revoke(issued.record.serial,
                                                         Reason.superseded, f"op{i}"))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], CertwrightError), results
    assert errors[0].kind is ErrorKind.CONFLICT
    assert [e for e, _ in events(store_ca.store)][before:] == ["certificate.revoked"]
    assert_chain(store_ca.store, before + 1)


# -- (g) round trips -----------------------------------------------------------------------


def test_ok_datetimes_round_trip_as_aware_utc(store_url: str) -> None:
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    nb = dt.datetime(2026, 3, 29, 2, 30, 15, 123456, tzinfo=ist)  # 21:00:15Z the day before
    na = dt.datetime(2026, 6, 1, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    with open_store(store_url) as store:
        store.migrate()
        rec = sample_record(not_before=nb, not_after=na, issued_at=nb)
        with store.write() as conn:
            store.insert_certificate(conn, rec)
        back = store.certificate(rec.serial)
        for sent, got in [(nb, back.not_before), (na, back.not_after), (nb, back.issued_at)]:
            assert got == sent
            assert got.utcoffset() == dt.timedelta(0)
        assert back.not_before.isoformat() == "2026-03-28T21:00:15.123456+00:00"
        assert back.revoked_at is None
        # Comparisons in queries hold across offsets, too.
        assert store.certificates(expiring_before=na) == []
        assert [c.serial for c in store.certificates(
            expiring_before=na + dt.timedelta(seconds=1))] == [rec.serial]
        with pytest.raises(sa.exc.StatementError, match="naive datetime"), \
                store.write() as conn:
            store.insert_certificate(conn, sample_record(
                "ff", not_after=dt.datetime(2026, 1, 1)))
        assert store.count_certificates() == 1


def test_ok_certificate_der_and_names_round_trip(store_ca: CertificateAuthority) -> None:
    names = ["xn--hllo-bpa.svc.internal", "10.1.2.3", "fd00::1", "web.svc.internal"]
    issued = store_ca.enroll(request(csr(names, cn="web.svc.internal")))
    assert isinstance(issued, Issued)
    back = store_ca.store.certificate(issued.record.serial)
    assert back == issued.record
    assert isinstance(back.der, bytes)
    assert back.der == issued.certificate.public_bytes(serialization.Encoding.DER)
    assert back.names == issued.record.names
    assert x509.load_der_x509_certificate(back.der).serial_number == int(back.serial, 16)


# -- the command line on PostgreSQL --------------------------------------------------------


@pytest.mark.postgres
def test_ok_cli_end_to_end_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from tests.conftest import lint_and_verify

    data = tmp_path / "ca"
    run("init", "--data", str(data), "--store-url", pg_url, check=True)
    assert f"url: {pg_url}" in (data / "certwright.yaml").read_text()
    assert not (data / "certwright.db").exists()
    (tmp_path / "req.csr").write_bytes(csr_pem(["e2e.svc.internal"]))
    proc = run("issue", "--data", str(data), "--csr", str(tmp_path / "req.csr"),
               "--out", str(tmp_path / "leaf.pem"), check=True)
    assert proc.stderr.startswith("issued serial ")
    serial = proc.stderr.split()[2]
    proc = run("certs", "show", serial, "--data", str(data), check=True)
    assert "dns:e2e.svc.internal" in proc.stdout
    proc = run("audit", "verify", "--data", str(data), check=True)
    assert proc.stdout.strip() == "audit log intact: 3 records"
    with open_store(pg_url) as store:
        assert [c.serial for c in store.certificates()] == [serial]
    assert lint_and_verify(data) == 1
