"""Shared fixtures.

Every CA directory a test creates through ``ca_dir`` is checked when the test ends: each
certificate in its store must pass pkilint (RFC 5280; CA/B server-auth for serverAuth
certificates, less the findings a private CA expects) and ``openssl verify`` against
the directory's root.pem and chain.pem, at the time it was issued.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from certwright.ca import datadir, lint
from certwright.ca.service import CertificateAuthority
from certwright.clock import FakeClock
from certwright.store.repo import Store

pytest_plugins = ["tests.pg"]

REQUIRE_PEERS = os.environ.get("CERTWRIGHT_REQUIRE_PEERS") == "1"

# The one peer every tier may run: openssl verifies each CA directory a test creates
# (``ca_dir``). Any other program is run only by tests marked ``peer`` (or ``postgres``),
# which ``make unit`` leaves out; ``require_peer`` fails an unmarked test that asks for
# one, so the marks stay true.
BASE_PEERS = frozenset({"openssl"})
_running: pytest.Item | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None


def check_marked(program: str) -> None:
    """Fail the running test if it runs ``program`` without a ``peer`` or ``postgres`` mark."""
    item = _running
    if program in BASE_PEERS or item is None:
        return
    if item.get_closest_marker("peer") is None and item.get_closest_marker("postgres") is None:
        pytest.fail(f"{item.nodeid} runs {program} but is not marked: add "
                    f"pytest.mark.peer({program!r}) so that `make unit` leaves it out",
                    pytrace=False)


def require_peer(program: str, package: str) -> str:
    """The path of ``program``; skip (or fail under CERTWRIGHT_REQUIRE_PEERS=1) if absent."""
    check_marked(program)
    path = shutil.which(program)
    if path is None:
        for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (d / program).exists():
                return str(d / program)
        message = f"{program} not found: install the Debian package {package}"
        if REQUIRE_PEERS:
            pytest.fail(message + " (CERTWRIGHT_REQUIRE_PEERS=1)")
        pytest.skip(message)
    return path


def lint_and_verify(data: Path) -> int:
    """Lint and verify every certificate stored in the CA at ``data``; return the count."""
    openssl = require_peer("openssl", "openssl")
    if not lint.available():
        message = "pkilint is not installed: pip install pkilint"
        if REQUIRE_PEERS:
            pytest.fail(message)
        pytest.skip(message)
    _, config, _ = datadir.load(data)
    store = Store.open(config.store.url, data)
    try:
        records = store.certificates(limit=1_000_000)
    finally:
        store.close()
    problems = []
    for rec in records:
        cert = x509.load_der_x509_certificate(rec.der)
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            server_auth = ExtendedKeyUsageOID.SERVER_AUTH in eku
        except x509.ExtensionNotFound:
            server_auth = False
        findings = [f for f in lint.lint_certificate(rec.der, server_auth=server_auth)
                    if f.code not in lint.PRIVATE_CA_ALLOWED]
        if findings:
            problems.append(f"{rec.serial}: " + "; ".join(map(str, findings)))
        at = int(max(rec.issued_at, rec.not_before).timestamp()) + 1
        pem = cert.public_bytes(serialization.Encoding.PEM)
        proc = subprocess.run(
            [openssl, "verify", "-attime", str(at), "-CAfile", str(data / "root.pem"),
             "-untrusted", str(data / "chain.pem")],
            input=pem, capture_output=True, check=False,
        )
        if proc.returncode != 0 or b": OK" not in proc.stdout:
            problems.append(f"{rec.serial}: openssl verify: {proc.stdout!r} {proc.stderr!r}")
    assert not problems, "\n".join(problems)
    return len(records)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Iterator[Path]:
    """A freshly initialized CA directory; its certificates are all checked at the end."""
    data = tmp_path / "ca"
    datadir.init(data, http="127.0.0.1:8080", https="127.0.0.1:8443")
    yield data
    lint_and_verify(data)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
def ca(ca_dir: Path, clock: FakeClock) -> Iterator[CertificateAuthority]:
    with datadir.opened(ca_dir, clock=clock) as opened:
        yield opened

