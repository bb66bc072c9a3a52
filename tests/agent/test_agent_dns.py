"""dns-01 through RFC 2136 dynamic updates with TSIG, against a real ``named`` (Debian
package ``bind9``) that the test starts on loopback with its own configuration, zone and
key (made by ``tsig-keygen``), as whoever runs the tests.

The CA is a real ``certwright serve`` whose validation resolver is that named: the
agent adds ``_acme-challenge`` TXT records by signed UPDATE, the server reads them from
named, and the agent deletes them again. A name and its wildcard are validated through
the same ``_acme-challenge`` owner at once (two values side by side).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml
from cryptography import x509

from certwright.agent import rfc2136
from certwright.agent.spec import Rfc2136
from certwright.errors import CertwrightError
from tests.agent_support import (
    assert_pair_matches,
    configure_acme,
    run_agent,
    safe_directory,
    status,
    write_spec,
)
from tests.conftest import require_peer
from tests.served import Served, free_ports, serving

pytestmark = pytest.mark.peer("named", "tsig-keygen", "curl")

ZONE = "dns.test"
KEY_NAME = "agent-key"

ZONE_FILE = """\
$TTL 60
@   IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 60
@   IN NS  ns.{zone}.
ns  IN A   127.0.0.1
"""
NAMED_CONF = """\
include "{key}";
options {{
    directory "{dir}";
    pid-file none;
    session-keyfile none;
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{dir}/{zone}.db";
    allow-update {{ key {key_name}; }};
}};
"""


@dataclasses.dataclass(frozen=True)
class Named:
    port: int
    key_file: Path
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def txt(self, name: str) -> list[str]:
        q = dns.message.make_query(name, dns.rdatatype.TXT)
        r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=5)
        assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), dns.rcode.to_text(r.rcode())
        return [t.to_text() for rrset in r.answer for t in rrset]

    @property
    def secret(self) -> str:
        found = re.search(r'secret "([^"]+)"', self.key_file.read_text())
        assert found is not None
        return found.group(1)


@contextlib.contextmanager
def named(base: Path) -> Iterator[Named]:
    program = require_peer("named", "bind9")
    keygen = require_peer("tsig-keygen", "bind9")
    directory = base / "named"
    directory.mkdir()
    key_file = directory / "agent.key"
    key = subprocess.run([keygen, "-a", "hmac-sha256", KEY_NAME], capture_output=True,
                         text=True, check=True)
    key_file.write_text(key.stdout)
    key_file.chmod(0o600)
    (port,) = free_ports(1)
    (directory / f"{ZONE}.db").write_text(ZONE_FILE.format(zone=ZONE))
    conf = directory / "named.conf"
    conf.write_text(NAMED_CONF.format(key=key_file, dir=directory, port=port, zone=ZONE,
                                      key_name=KEY_NAME))
    log = base / "named.log"
    with log.open("wb") as out:
        # -g: foreground, log to stderr; no -u: it runs as the user running the tests.
        proc = subprocess.Popen([program, "-g", "-c", str(conf), "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    server = Named(port, key_file, log)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                q = dns.message.make_query(ZONE, dns.rdatatype.SOA)
                if dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5).answer:
                    break
            except (OSError, dns.exception.Timeout):
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "named did not start: " + log.read_text()
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _configure(data: Path, resolver: str) -> None:
    configure_acme(data, resolver=resolver)
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tls-server"]["names"]["wildcards"] = True
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclasses.dataclass(frozen=True)
class World:
    served: Served
    named: Named
    root: Path

    def spec(self, name: str, names: list[str], **rfc: Any) -> dict[str, Any]:
        out = self.root / "out" / name
        out.mkdir(parents=True, exist_ok=True, mode=0o755)
        doc: dict[str, Any] = {
            "name": name,
            "issuer": {"acme": {
                "directory": f"{self.served.https}/acme/directory",
                "tls_trust": str(self.served.root_pem),
                "challenge": {"dns-01": {"rfc2136": {
                    "server": self.named.address, "key_file": str(self.named.key_file),
                    **rfc}}},
            }},
            "names": [{"static": names}],
            "output": {"directory": str(out)},
            "trust_anchor": str(self.served.root_pem),
        }
        write_spec(self.root / "specs", doc)
        return doc

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_agent(self.root / "specs", self.root / "state", *args)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("agent-dns")
    with named(base) as ns, serving(base, lambda d: _configure(d, ns.address)) as served, \
            safe_directory() as root:
        (root / "specs").mkdir(mode=0o755)
        yield World(served, ns, root)


def test_ok_rfc2136_name_and_wildcard(world: World) -> None:
    world.spec("zone", [ZONE, f"*.{ZONE}"])
    proc = world.run("--log-level", "debug", "enroll", "zone")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert = assert_pair_matches(world.root / "out" / "zone")
    assert sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                  .value.get_values_for_type(x509.DNSName)) == [f"*.{ZONE}", ZONE]
    # Both values went to the one owner name through signed updates, and both are gone.
    log = world.named.log.read_text()
    assert len(re.findall(rf"signer \"{KEY_NAME}\" approved", log)) >= 4, log
    assert world.named.txt(f"_acme-challenge.{ZONE}") == []
    assert proc.stderr.count(f"dns-01: TXT _acme-challenge.{ZONE} added in zone {ZONE}") == 2
    assert status(world.root / "specs", world.root / "state")["zone"]["validation"] == \
        "dns-01 rfc2136"
    # The TSIG secret appears nowhere in the agent's output (debug level), in any form.
    secret = world.named.secret
    raw = base64.b64decode(secret)
    for form in (secret, raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert form not in proc.stdout + proc.stderr


def test_ok_rfc2136_bare_secret_with_key_name_and_zone(world: World) -> None:
    """A key file holding only the base64 secret, the key's name and the zone in the spec."""
    bare = world.root / "bare.key"
    bare.write_text(world.named.secret + "\n")
    bare.chmod(0o600)
    world.spec("bare", [f"bare.{ZONE}"], key_file=str(bare), key_name=KEY_NAME, zone=ZONE,
               algorithm="hmac-sha256")
    proc = world.run("enroll", "bare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_pair_matches(world.root / "out" / "bare")


def test_fail_rfc2136_wrong_secret_is_refused_and_not_shown(world: World) -> None:
    wrong_secret = base64.b64encode(b"\x01" * 32).decode()
    wrong = world.root / "wrong.key"
    wrong.write_text(f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret '
                     f'"{wrong_secret}";\n}};\n')
    world.spec("wrong", [f"wrong.{ZONE}"], key_file=str(wrong))
    proc = world.run("enroll", "wrong")
    assert proc.returncode == 1
    assert f"RFC 2136 add of TXT _acme-challenge.wrong.{ZONE} in zone {ZONE} at " \
        f"{world.named.address}: " in proc.stdout, proc.stdout
    assert "the server rejected the TSIG signature" in proc.stdout, proc.stdout
    assert wrong_secret not in proc.stdout + proc.stderr
    row = status(world.root / "specs", world.root / "state")["wrong"]
    assert row["serial"] is None and "RFC 2136" in row["last_error"]
    assert not (world.root / "out" / "wrong" / "cert.pem").exists()


# -- the key file, without a server ----------------------------------------------------


def _cfg(tmp_path: Path, text: str, **extra: Any) -> Rfc2136:
    f = tmp_path / "k"
    f.write_text(text)
    return Rfc2136.model_validate({"server": "127.0.0.1:53", "key_file": str(f), **extra})


SECRET = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(("case", "text", "extra", "want"), [
    ("ok/tsig-keygen-clause",
     f'key "k1" {{\n\talgorithm hmac-sha512;\n\tsecret "{SECRET}";\n}};\n', {},
     ("k1", "hmac-sha512")),
    ("ok/clause-spec-wins", f'key k1 {{ algorithm hmac-sha512; secret "{SECRET}"; }};',
     {"key_name": "k2", "algorithm": "hmac-sha256"}, ("k2", "hmac-sha256")),
    ("ok/bare-secret", f"{SECRET}\n", {"key_name": "k3"}, ("k3", "hmac-sha256")),
])
def test_ok_tsig_key_file(tmp_path: Path, case: str, text: str, extra: dict[str, Any],
                          want: tuple[str, str]) -> None:
    key = rfc2136.load_key(_cfg(tmp_path, text, **extra))
    assert (key.name, key.algorithm, key.secret) == (*want, bytes(range(32))), case
    assert SECRET not in repr(key)


@pytest.mark.parametrize(("case", "text", "extra", "message"), [
    ("fail/bare-secret-without-name", SECRET, {}, "holds only a secret: give "
                                                  "rfc2136.key_name"),
    ("fail/not-base64", "not base64 at all!", {"key_name": "k"}, "the secret is not base64"),
    ("fail/clause-without-secret", "key k { algorithm hmac-sha256; };", {},
     "the key clause has no secret"),
    ("fail/unknown-algorithm", f'key k {{ algorithm hmac-md4; secret "{SECRET}"; }};', {},
     "algorithm 'hmac-md4' is not one of"),
])
def test_fail_tsig_key_file(tmp_path: Path, case: str, text: str, extra: dict[str, Any],
                            message: str) -> None:
    with pytest.raises(CertwrightError) as err:
        rfc2136.load_key(_cfg(tmp_path, text, **extra))
    assert message in str(err.value), case
    assert SECRET not in str(err.value) and "base64 at all" not in str(err.value), case


def test_fail_tsig_key_file_missing(tmp_path: Path) -> None:
    cfg = Rfc2136.model_validate({"server": "127.0.0.1:53",
                                  "key_file": str(tmp_path / "absent")})
    with pytest.raises(CertwrightError, match="no such file"):
        rfc2136.load_key(cfg)
