"""Issuance rate: bare `cryptography` against the Authority, in one run on one machine.

    .venv/bin/python bench/issuance.py [--key-type ec-p384] [--rounds 5] [--count 500]
                                       [--lint-count 100] [--no-lint] [--pg-url URL] [--json]

(a) bare       CertificateBuilder with the extensions the Authority adds (basicConstraints,
               keyUsage, EKU, SAN, AKI, SKI, AIA, CRLDP) signed by the same CA key.
(b) authority  PEM CSR -> certwright.pki.csr.load (signature verified) -> EnrollmentRequest
               -> CertificateAuthority.enroll (RA, template check, serial reserved,
               one signature by the key provider's issuing key, certificate + audit
               record in one durable SQLite transaction, synchronous=FULL).
(c) lint       as (b), with issuance.lint=true (pkilint on the TBS signed by a throwaway
               key first; still one CA signature).
(d) postgresql as (b), against a temporary database on --pg-url (created, then dropped).
    commit     floor: one-row write transactions with the store's SQLite settings
               (BEGIN IMMEDIATE, WAL, synchronous=FULL) in the same directory: the fsync.

Rounds of (a), (b), (c), (d) are interleaved so that noise on a shared machine hits them
alike; each figure is the median over the rounds. Client key generation and CSR signing
happen before any timing. Everything runs in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certwright import registry
from certwright.ca import datadir, lint
from certwright.ca.policy import EnrollmentRequest, Requester
from certwright.ca.service import CertificateAuthority, Issued
from certwright.pki import csr as csrlib
from certwright.pki.keys import CA_KEY_TYPES, load_private_key, signature_hash

PROFILE = "tls-server"


# -- inputs ---------------------------------------------------------------------------------

def client_key(kind: str) -> Any:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    raise SystemExit(f"unknown --csr-key {kind!r}")


def make_csrs(n: int, kind: str, tag: str) -> list[bytes]:
    """PEM CSRs as a client sends them: own key, CN and one SAN under *.internal."""
    out = []
    for i in range(n):
        name = f"host{i}.{tag}.bench.internal"
        k = client_key(kind)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(k, hashes.SHA256())
        )
        out.append(csr.public_bytes(serialization.Encoding.PEM))
    return out


def fresh_ca(parent: Path, name: str, key_type: str, *, lint_on: bool = False,
             store_url: str | None = None) -> Path:
    path = parent / name
    datadir.init(path, key_type=key_type, store_url=store_url or "sqlite:///certwright.db")
    if lint_on:
        config = path / datadir.CONFIG_NAME
        text = config.read_text()
        assert "  lint: false" in text
        config.write_text(text.replace("  lint: false", "  lint: true", 1))
    return path


# -- (a) bare cryptography -------------------------------------------------------------------

@dataclass
class Bare:
    """The certificate the Authority builds, with nothing of ours in the way."""

    key: Any
    ca: x509.Certificate
    base_url: str
    issuer_id: str

    def __post_init__(self) -> None:
        self.hash = signature_hash(self.key)
        ski = self.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        self.aia = x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(f"{self.base_url}/ocsp")),
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(f"{self.base_url}/ca/{self.issuer_id}.der")),
        ])
        self.crldp = x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(
                f"{self.base_url}/crl/{self.issuer_id}.crl")],
            relative_name=None, reasons=None, crl_issuer=None)])

    def sign(self, public_key: Any, name: str, serial: int, now: dt.datetime) -> bytes:
        cert = (
            x509.CertificateBuilder()
            .serial_number(serial)
            .issuer_name(self.ca.subject)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .public_key(public_key)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                # tls-server: keyEncipherment only where the subject key can encipher.
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(self.aki, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(self.aia, critical=False)
            .add_extension(self.crldp, critical=False)
            .sign(self.key, self.hash)
        )
        return cert.public_bytes(serialization.Encoding.DER)


# -- timing -----------------------------------------------------------------------------------

def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def enroll_all(ca: CertificateAuthority, pems: Sequence[bytes]) -> None:
    requester = Requester("bench", "issuance")
    for pem in pems:
        csr = csrlib.load(pem)
        out = ca.enroll(EnrollmentRequest(profile=PROFILE, csr=csr, requester=requester,
                                          protocol=registry.LOCAL))
        if not isinstance(out, Issued):
            raise SystemExit(f"expected an issued certificate, got {out!r}")


def commit_floor(directory: Path, n: int) -> float:
    """Durable one-row write transactions with the store's SQLite settings."""
    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        payload = os.urandom(600)

        def run() -> None:
            for _ in range(n):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t (v) VALUES (?)", (payload,))
                db.execute("COMMIT")

        return rate(n, run)
    finally:
        db.close()


def check_durable(ca: CertificateAuthority) -> None:
    """The figure means nothing unless each commit is durable: WAL with synchronous=FULL."""
    with ca.store.engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            return
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    if mode != "wal" or sync != 2:
        raise SystemExit(f"the store is not durable as configured (journal_mode={mode}, "
                         f"synchronous={sync}; expected wal and 2 = FULL)")


@contextlib.contextmanager
def pg_database(url: str) -> Iterator[str]:
    """A temporary database on the server at ``url`` (its role needs CREATEDB)."""
    import psycopg
    import sqlalchemy as sa

    base = sa.make_url(url).set(drivername="postgresql")
    name = f"cw_bench_{uuid.uuid4().hex[:12]}"
    admin_url = base.set(database=base.database or "postgres").render_as_string(
        hide_password=False)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the run ----------------------------------------------------------------------------------

@dataclass
class Series:
    label: str
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key-type", default="ec-p384", choices=CA_KEY_TYPES,
                   help="CA key type (default ec-p384, the init default)")
    p.add_argument("--csr-key", default="p256", help="client key: p256, p384, rsa2048...")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--count", type=int, default=500, help="certificates per round")
    p.add_argument("--lint-count", type=int, default=100,
                   help="certificates per round with issuance.lint=true (pkilint is slow)")
    p.add_argument("--no-lint", action="store_true", help="skip (c)")
    p.add_argument("--pg-url", help="PostgreSQL server for (d); its role needs CREATEDB")
    p.add_argument("--dir", type=Path, help="where the temporary directory goes "
                   "(default: the system's; it must be a real disk for the fsync to count)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.count < 1 or args.lint_count < 1:
        p.error("--rounds, --count and --lint-count must be positive")
    do_lint = not args.no_lint
    if do_lint and not lint.available():
        print("pkilint is not installed: skipping (c) (pip install -e '.[lint]')",
              file=sys.stderr)
        do_lint = False

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="certwright-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        say(f"setting up in {work} ...")
        ca_path = fresh_ca(work, "ca", args.key_type)
        ca = datadir.open_ca(ca_path)
        check_durable(ca)
        lint_ca = datadir.open_ca(fresh_ca(work, "ca-lint", args.key_type, lint_on=True)
                                  ) if do_lint else None
        pg_cm = pg_database(args.pg_url) if args.pg_url else contextlib.nullcontext(None)
        with pg_cm as pg_url, contextlib.ExitStack() as closing:
            closing.callback(ca.store.close)
            if lint_ca is not None:
                closing.callback(lint_ca.store.close)
            pg_ca = None
            if pg_url is not None:
                pg_ca = datadir.open_ca(fresh_ca(work, "ca-pg", args.key_type,
                                                 store_url=pg_url))
                closing.callback(pg_ca.store.close)

            n, rounds = args.count, args.rounds
            say(f"generating {rounds * n} {args.csr_key} CSRs (not timed) ...")
            csrs = [make_csrs(n, args.csr_key, f"r{r}") for r in range(rounds)]
            lint_csrs = [make_csrs(args.lint_count, args.csr_key, f"l{r}")
                         for r in range(rounds)] if lint_ca else []
            pg_csrs = [make_csrs(n, args.csr_key, f"p{r}")
                       for r in range(rounds)] if pg_ca else []
            bare_inputs = [[(x509.load_pem_x509_csr(pem).public_key(), f"b{i}.bench.internal")
                            for i, pem in enumerate(batch)] for batch in csrs]

            issuing = ca.chain[0]
            bare = Bare(load_private_key(ca_path / "ca" / "issuing.key"), issuing,
                        ca.config.server.http_url, ca.issuer_id)
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)

            # Warm-up: imports, caches, the first pkilint validator build, the page cache.
            warm = make_csrs(20, args.csr_key, "warm")
            enroll_all(ca, warm)
            if lint_ca is not None:
                enroll_all(lint_ca, warm[:3])
            if pg_ca is not None:
                enroll_all(pg_ca, warm)
            for pk, name in bare_inputs[0][:20]:
                bare.sign(pk, name, int.from_bytes(os.urandom(16), "big") | 1, now)

            s_bare, s_auth = Series("bare"), Series("authority")
            s_lint, s_pg, s_floor = Series("lint"), Series("postgresql"), Series("commit")
            for r in range(rounds):
                def bare_round(batch: list[tuple[Any, str]] = bare_inputs[r]) -> None:
                    for pk, name in batch:
                        bare.sign(pk, name, int.from_bytes(os.urandom(16), "big") | 1, now)

                s_bare.rates.append(rate(n, bare_round))
                s_auth.rates.append(rate(n, functools.partial(enroll_all, ca, csrs[r])))
                if lint_ca is not None:
                    s_lint.rates.append(rate(args.lint_count, functools.partial(
                        enroll_all, lint_ca, lint_csrs[r])))
                if pg_ca is not None:
                    s_pg.rates.append(rate(n, functools.partial(enroll_all, pg_ca, pg_csrs[r])))
                floor_dir = work / f"floor{r}"
                floor_dir.mkdir()
                s_floor.rates.append(commit_floor(floor_dir, n))
                say(f"round {r + 1}/{rounds}: bare {s_bare.rates[-1]:.0f}/s, "
                    f"authority {s_auth.rates[-1]:.0f}/s"
                    + (f", lint {s_lint.rates[-1]:.1f}/s" if s_lint.rates else "")
                    + (f", postgresql {s_pg.rates[-1]:.0f}/s" if s_pg.rates else "")
                    + f", commit floor {s_floor.rates[-1]:.0f}/s")

            # The stores hold what was issued, and the audit chain still verifies.
            for c in (ca, pg_ca):
                if c is not None:
                    _, broken = c.store.verify_audit()
                    if broken is not None:
                        raise SystemExit(f"audit chain broken after the run: {broken}")
                    if c.store.count_certificates() != rounds * n + len(warm):
                        raise SystemExit("the store does not hold every issued certificate")

    series = [s for s in (s_bare, s_auth, s_lint, s_pg, s_floor) if s.rates]
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cryptography": cryptography.__version__,
                    "cpus": os.cpu_count(), "platform": platform.platform()},
        "ca_key": args.key_type, "csr_key": args.csr_key, "rounds": rounds,
        "count": n, "lint_count": args.lint_count if s_lint.rates else None,
        "rates": {s.label: [round(x, 1) for x in s.rates] for s in series},
        "median": {s.label: round(s.median, 1) for s in series},
        "ratio_authority_to_bare": round(s_auth.median / s_bare.median, 3),
    }
    # Per-certificate costs from the medians (ms).
    ms = {s.label: 1000 / s.median for s in series}
    result["ms_per_cert"] = {k: round(v, 3) for k, v in ms.items()}
    result["store_and_core_ms"] = round(ms["authority"] - ms["bare"], 3)
    if s_lint.rates:
        result["lint_ms_per_cert"] = round(ms["lint"] - ms["authority"], 2)
    if s_pg.rates:
        result["ratio_postgresql_to_bare"] = round(s_pg.median / s_bare.median, 3)

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\ncertwright issuance: CA {args.key_type}, client keys {args.csr_key}, "
          f"{rounds} rounds, {n} certificates a round"
          + (f" ({args.lint_count} with lint)" if s_lint.rates else "") + "; "
          f"cryptography {cryptography.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")
    labels = {"bare": "(a) bare cryptography build+sign",
              "authority": "(b) Authority, CSR -> durable commit",
              "lint": "(c) Authority with issuance.lint",
              "postgresql": "(d) Authority on PostgreSQL",
              "commit": "    SQLite durable commit floor"}
    print(f"{'':38} {'median/s':>10} {'ms/cert':>9}   rounds/s")
    for s in series:
        print(f"{labels[s.label]:38} {s.median:10.1f} {ms[s.label]:9.3f}   "
              + " ".join(f"{x:.0f}" if x >= 100 else f"{x:.1f}" for x in s.rates))
    print(f"\nratio (b)/(a): {result['ratio_authority_to_bare']:.3f}   (target >= 0.5)")
    print(f"Authority overhead over bare: {result['store_and_core_ms']:.3f} ms/cert")
    if s_lint.rates:
        print(f"lint cost: {result['lint_ms_per_cert']:.2f} ms/cert")
    if s_pg.rates:
        print(f"ratio (d)/(a): {result['ratio_postgresql_to_bare']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
