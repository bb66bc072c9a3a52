"""Keys on the target, check before install, the versioned install and its rollback.

Certificates come from a real certwright CA in-process (the ``ca`` fixture); the agent's
own checks and its files are what is under test.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.agent import fs
from certwright.agent.core import Agent
from certwright.agent.install import Installer, Material
from certwright.agent.spec import KeySpec, Output, parse_spec
from certwright.agent.state import State
from certwright.agent.verify import check_issued, load_anchors
from certwright.ca import datadir
from certwright.ca.service import CertificateAuthority, Issued
from certwright.clock import FakeClock
from certwright.errors import CertwrightError
from tests.agent_support import assert_pair_matches, safe_directory
from tests.helpers import csr, request


@pytest.fixture
def safe() -> Iterator[Path]:
    with safe_directory() as d:
        yield d


def issue(ca: CertificateAuthority, key: Any, names: list[str]) -> Issued:
    issued = ca.enroll(request(csr(names, private_key=key)))
    assert isinstance(issued, Issued)
    return issued


def material(ca: CertificateAuthority, names: list[str] | None = None) -> Material:
    key = fs.generate_key(KeySpec())
    issued = issue(ca, key, names or ["a.test"])
    return Material(key, issued.certificate, issued.chain)


# -- check before install -----------------------------------------------------------------


def test_ok_check_issued(ca: CertificateAuthority, ca_dir: Path, clock: FakeClock) -> None:
    m = material(ca, ["a.test", "10.0.0.1"])
    check_issued(m.leaf, m.chain, m.key, ["dns:a.test", "ip:10.0.0.1"],
                 load_anchors(ca_dir / "root.pem"), clock.now())


@pytest.mark.parametrize(("case", "names", "rule", "message"), [
    ("fail/extra-name", ["dns:a.test"], "check.names", "not derived by the spec: dns:b.test"),
    ("fail/missing-name", ["dns:a.test", "dns:b.test", "dns:c.test"], "check.names",
     "missing: dns:c.test"),
])
def test_fail_check_issued_names(ca: CertificateAuthority, ca_dir: Path, clock: FakeClock,
                                 case: str, names: list[str], rule: str, message: str) -> None:
    m = material(ca, ["a.test", "b.test"])
    with pytest.raises(CertwrightError) as err:
        check_issued(m.leaf, m.chain, m.key, names, load_anchors(ca_dir / "root.pem"),
                     clock.now())
    assert err.value.rule == rule and message in err.value.detail, case


def test_fail_check_issued_key_chain_validity(ca: CertificateAuthority, ca_dir: Path,
                                              clock: FakeClock, tmp_path: Path) -> None:
    m = material(ca)
    anchors = load_anchors(ca_dir / "root.pem")
    other = fs.generate_key(KeySpec())
    with pytest.raises(CertwrightError) as err:
        check_issued(m.leaf, m.chain, other, ["dns:a.test"], anchors, clock.now())
    assert err.value.rule == "check.key"
    # The chain must lead to the configured anchor, not to any CA.
    stranger = tmp_path / "stranger"
    datadir.init(stranger, http="127.0.0.1:1", https="127.0.0.1:2")
    with pytest.raises(CertwrightError) as err:
        check_issued(m.leaf, m.chain, m.key, ["dns:a.test"],
                     load_anchors(stranger / "root.pem"), clock.now())
    assert err.value.rule == "check.chain"
    with pytest.raises(CertwrightError) as err:
        check_issued(m.leaf, (), m.key, ["dns:a.test"], anchors, clock.now())
    assert err.value.rule == "check.chain"  # the intermediate is missing
    with pytest.raises(CertwrightError) as err:
        check_issued(m.leaf, m.chain, m.key, ["dns:a.test"], anchors,
                     m.leaf.not_valid_after_utc + dt.timedelta(seconds=1))
    assert err.value.rule == "check.validity"


# -- the versioned install ----------------------------------------------------------------


def output(directory: Path, **extra: Any) -> Output:
    return Output.model_validate({"directory": str(directory), "chain": "chain.pem",
                                  "fullchain": "fullchain.pem", "combined": "combined.pem",
                                  **extra})


def install(inst: Installer, m: Material) -> tuple[str, str | None]:
    version = inst.stage_key(m.key)
    inst.complete(version, m)
    return version, inst.activate(version)


def test_ok_install_switch_and_rollback(ca: CertificateAuthority, safe: Path) -> None:
    out = output(safe)
    first, second = material(ca), material(ca)
    with Installer("web", out) as inst:
        v1, prev = install(inst, first)
        assert prev is None
        assert assert_pair_matches(safe) == first.leaf
        v2, prev = install(inst, second)
        assert prev == v1 and inst.live_version() == v2
        assert assert_pair_matches(safe) == second.leaf
        inst.rollback(prev, v2)
        assert inst.live_version() == v1 and inst.versions() == [v1]
    assert assert_pair_matches(safe) == first.leaf
    combined = (safe / "combined.pem").read_bytes()
    assert combined.startswith(b"-----BEGIN PRIVATE KEY-----")
    live = safe / ".certwright" / "web" / v1
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in live.iterdir()}
    assert modes == {"key.pem": 0o600, "combined.pem": 0o600, "cert.pem": 0o644,
                     "chain.pem": 0o644, "fullchain.pem": 0o644}
    assert x509.load_pem_x509_certificates((safe / "fullchain.pem").read_bytes()) == \
        [first.leaf, *first.chain]


def test_ok_existing_plain_files_are_kept_as_a_version(ca: CertificateAuthority,
                                                       safe: Path) -> None:
    old, new = material(ca), material(ca)
    (safe / "privkey.pem").write_bytes(fs.key_pem(old.key))
    (safe / "cert.pem").write_bytes(old.leaf.public_bytes(serialization.Encoding.PEM))
    with Installer("web", output(safe)) as inst:
        _, previous = install(inst, new)
        assert previous is not None
        assert inst.read(previous, "key") == fs.key_pem(old.key)
    assert (safe / "cert.pem").is_symlink()
    assert assert_pair_matches(safe) == new.leaf


def test_ok_key_mode_and_group(ca: CertificateAuthority, safe: Path) -> None:
    m = material(ca)
    with Installer("web", output(safe, key_mode="0640", group=0, owner=0)) as inst:
        version, _ = install(inst, m)
    key = safe / ".certwright" / "web" / version / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    assert (key.stat().st_uid, key.stat().st_gid) == (0, 0)


def test_fail_write_new_never_follows_or_reuses_a_name(safe: Path) -> None:
    with fs.open_dir(safe) as d:
        fs.write_new(d, "a", b"1", 0o600)
        os.symlink("/etc/passwd", safe / "link")
        fs.write_new(d, "link", b"2", 0o600)  # replaces the link itself
    assert not (safe / "link").is_symlink() and (safe / "link").read_bytes() == b"2"
    assert stat.S_IMODE((safe / "a").stat().st_mode) == 0o600


# -- unsafe output directories: refused before any key is written --------------------------


def _spec(directory: Path, anchor: Path) -> Any:
    return parse_spec({
        "name": "web",
        "issuer": {"acme": {"directory": "https://127.0.0.1:9/acme/directory",
                            "challenge": {"http-01": {"standalone": "127.0.0.1:9"}}}},
        "names": [{"static": ["web.test"]}],
        "output": {"directory": str(directory)},
        "trust_anchor": str(anchor),
    }, "web.yaml")


def _refused(safe: Path, ca_dir: Path, directory: Path, message: str) -> None:
    state = State(safe / "state")
    try:
        agent = Agent(state, FakeClock(), rng=random.Random(1))
        result = agent.enroll(_spec(directory, ca_dir / "root.pem"))
        row = state.get("web")
    finally:
        state.close()
    assert not result.ok and result.error is not None
    assert message in result.error, result.error
    assert row is not None and row.last_error == result.error and row.serial is None
    if directory.exists():
        assert list(directory.iterdir()) == [] or not directory.is_dir()


@pytest.mark.parametrize(("case", "make", "message"), [
    ("fail/world-writable", lambda d: (d.mkdir(), d.chmod(0o777)), "writable by others"),
    ("fail/group-writable", lambda d: (d.mkdir(), d.chmod(0o775)), "writable by its group"),
    ("fail/symlink-owned-by-nobody",
     lambda d: ((d.parent / "real").mkdir(), d.symlink_to(d.parent / "real"),
                os.lchown(d, 65534, 65534)), "a symlink owned by uid 65534"),
    ("fail/directory-owned-by-nobody", lambda d: (d.mkdir(), os.chown(d, 65534, 65534)),
     "owned by uid 65534"),
])
def test_fail_unsafe_output_directory(safe: Path, ca_dir: Path, case: str, make: Any,
                                      message: str) -> None:
    target = safe / "out"
    make(target)
    _refused(safe, ca_dir, target, f"{target}: {message}" if "symlink" not in case
             else message)
    if case == "fail/symlink-owned-by-nobody":
        assert list((safe / "real").iterdir()) == []


def test_fail_shared_temporary_directory(safe: Path, ca_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"  # under /tmp: anyone may plant names there first
    target.mkdir(mode=0o700)
    _refused(safe, ca_dir, target, "/tmp: writable by others (a shared temporary directory)")
