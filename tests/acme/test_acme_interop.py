"""Real ACME clients, unchanged, against a real ``certwright serve`` on loopback.

certbot 2.1 and lego 4.9 (the Debian packages) enroll, renew and revoke the way an
operator would run them: pointed at our directory, trusting our root, nothing else.
Validation is real: the server fetches http-01 from the client's standalone listener
(or the web server certbot's --webroot writes for), makes the tls-alpn-01 handshake with
lego's listener, and reads dns-01 TXT records from pebble-challtestsrv, which lego's
``exec`` provider and certbot's manual hooks fill through its management API.

Client limits met here: lego 4.9 has no RFC 8738 IP identifiers (4.11 added them), so
the IP case checks the refusal of what it sends instead; certbot 2.1 on Python 3.11
hides every ACME error behind an AttributeError (``certbot_said``).

One server and one challtestsrv serve the whole module. Every certificate the CA
issued is linted and verified when the server stops (``served.serving``); each test
also verifies what the client saved, with ``openssl verify`` and the client's chain.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.challtestsrv import ChallTestSrv, challtestsrv
from tests.cli import run
from tests.conftest import require_peer
from tests.served import Served, free_ports, openssl, serving

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl", "certbot", "lego", "certbot5")

# Profiles the module's configuration adds beside the default tls-server.
EAB_PROFILE = "eab-server"
WILD_PROFILE = "wild-server"
CLIENT_TIMEOUT = 120  # seconds for one client run; they take a few


@dataclasses.dataclass(frozen=True)
class World:
    served: Served
    chall: ChallTestSrv
    http01_port: int
    tlsalpn01_port: int

    def directory(self, profile: str | None = None) -> str:
        if profile is None:
            return f"{self.served.https}/acme/directory"
        return f"{self.served.https}/acme/{profile}/directory"


def _configure(data: Path, *, resolver: str, http01: int, tlsalpn01: int) -> None:
    """Point validation at challtestsrv (DNS) and the clients' listeners (http-01 and
    tls-alpn-01 ports), allow loopback, and add an EAB and a wildcard profile."""
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["acme"].update(dns_resolver=resolver, http01_port=http01, tlsalpn01_port=tlsalpn01,
                       timeout="5s")
    profiles = doc["profiles"]
    tls = profiles["tls-server"]
    tls["acme"]["validation_networks"].append("127.0.0.0/8")
    eab = copy.deepcopy(tls)
    eab["protocols"] = ["acme"]
    eab["acme"]["eab_required"] = True
    wild = copy.deepcopy(tls)
    wild["protocols"] = ["acme"]
    wild["names"]["wildcards"] = True
    profiles[EAB_PROFILE] = eab
    profiles[WILD_PROFILE] = wild
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("acme-interop")
    http01, tlsalpn01 = free_ports(2)
    with challtestsrv(base, http01=False, tlsalpn01=False) as chall:
        configure = functools.partial(_configure, resolver=chall.resolver, http01=http01,
                                      tlsalpn01=tlsalpn01)
        with serving(base, configure) as served:
            yield World(served, chall, http01, tlsalpn01)


# -- running the clients -------------------------------------------------------------------


def _client_env(world: World) -> dict[str, str]:
    # Debian's certbot runs on the system Python: nothing of this virtualenv may leak in.
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy")
           and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # certbot (requests) and lego trust our root through these, and nothing else changes.
    env["REQUESTS_CA_BUNDLE"] = str(world.served.root_pem)
    env["LEGO_CA_CERTIFICATES"] = str(world.served.root_pem)
    return env


def _run(cmd: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), env=env, capture_output=True, text=True,
                          timeout=CLIENT_TIMEOUT, check=False, stdin=subprocess.DEVNULL)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def certbot(world: World, home: Path, *args: str, profile: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """certbot with all of its state under ``home``."""
    prog = require_peer("certbot", "certbot")
    return _run([prog, *args, "--non-interactive", "--server", world.directory(profile),
                 "--config-dir", str(home / "config"), "--work-dir", str(home / "work"),
                 "--logs-dir", str(home / "logs")], _client_env(world))


def certbot_at(prog: Path, world: World, home: Path, *args: str
               ) -> subprocess.CompletedProcess[str]:
    """Another certbot (certbot 5.x from .peers), with all of its state under ``home``."""
    return _run([str(prog), *args, "--non-interactive", "--server", world.directory(),
                 "--config-dir", str(home / "config"), "--work-dir", str(home / "work"),
                 "--logs-dir", str(home / "logs")], _client_env(world))


def certbot_standalone(world: World) -> list[str]:
    return ["--standalone", "--http-01-address", "127.0.0.1",
            "--http-01-port", str(world.http01_port)]


def certbot_said(proc: subprocess.CompletedProcess[str], home: Path) -> str:
    """What certbot reported, including its debug log: Debian's certbot 2.1 on Python
    3.11 prints "AttributeError: can't set attribute" instead of the ACME error it got
    (certbot/certbot#9539, fixed in 2.2); the problem document is in the log."""
    log = home / "logs" / "letsencrypt.log"
    return proc.stdout + proc.stderr + (log.read_text() if log.exists() else "")


@contextlib.contextmanager
def static_server(root: Path, port: int) -> Iterator[None]:
    """A plain web server (Python's http.server) serving ``root`` on 127.0.0.1:port."""
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    "http.server did not start"
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def lego(world: World, path: Path, options: Sequence[str], command: Sequence[str], *,
         profile: str | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """lego with its state in ``path``: global ``options`` (domains, challenges, EAB),
    then ``command`` (run, renew, revoke with their own options)."""
    prog = require_peer("lego", "lego")
    return _run([prog, "--server", world.directory(profile), "--path", str(path),
                 "--accept-tos", "--email", "lego@interop.test", *options, *command],
                {**_client_env(world), **(env or {})})


def lego_http(world: World) -> list[str]:
    return ["--http", "--http.port", f"127.0.0.1:{world.http01_port}"]


def lego_tls(world: World) -> list[str]:
    return ["--tls", "--tls.port", f"127.0.0.1:{world.tlsalpn01_port}"]


def txt_hook(world: World, tmp_path: Path) -> Path:
    """A script that sets (present) and clears (cleanup) a TXT record through
    challtestsrv's management API. lego's exec provider calls it with FQDN and VALUE;
    certbot's manual hooks call it without, and it reads CERTBOT_DOMAIN and
    CERTBOT_VALIDATION."""
    script = tmp_path / "txt-hook.py"
    base = f"http://127.0.0.1:{world.chall.management_port}"
    script.write_text(f"""#!{sys.executable}
# present|cleanup [FQDN VALUE]
import json, os, sys, urllib.request
action, *rest = sys.argv[1:]
fqdn, value = rest[:2] if rest else ("_acme-challenge." + os.environ["CERTBOT_DOMAIN"] + ".",
                                     os.environ.get("CERTBOT_VALIDATION", ""))
path, body = (("/set-txt", {{"host": fqdn, "value": value}}) if action == "present"
              else ("/clear-txt", {{"host": fqdn}}))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
req = urllib.request.Request({base!r} + path, data=json.dumps(body).encode(),
                             headers={{"Content-Type": "application/json"}})
with opener.open(req, timeout=10) as resp:
    sys.exit(0 if resp.status == 200 else 1)
""")
    script.chmod(0o755)
    return script


def lego_dns(world: World, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """lego's exec DNS provider with ``txt_hook``; lego checks propagation at
    challtestsrv too."""
    options = ["--dns", "exec", "--dns.resolvers", world.chall.resolver, "--dns.disable-cp"]
    # The exec provider solves one name at a time and by default waits 60 s between two
    # (a wildcard and its base name share one TXT name); challtestsrv needs no pause.
    env = {"EXEC_PATH": str(txt_hook(world, tmp_path)), "EXEC_POLLING_INTERVAL": "1",
           "EXEC_PROPAGATION_TIMEOUT": "30", "EXEC_SEQUENCE_INTERVAL": "1"}
    return options, env


# -- checking what the clients saved -------------------------------------------------------


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName),
            *(str(a) for a in san.get_values_for_type(x509.IPAddress))}


def assert_client_files(world: World, cert: Path, chain: Path, key: Path,
                        names: set[str]) -> x509.Certificate:
    """The certificate a client saved names exactly ``names``, matches its key, and
    verifies with the client's chain against our root; the CA's store has it."""
    proc = openssl("verify", "-CAfile", str(world.served.root_pem), "-untrusted", str(chain),
                   str(cert))
    assert proc.returncode == 0 and f"{cert}: OK" in proc.stdout, proc
    leaf = load_cert(cert)
    assert san_names(leaf) == names
    assert load_cert(chain) == world.served.issuing
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert (private.public_key().public_bytes(serialization.Encoding.DER, spki)
            == leaf.public_key().public_bytes(serialization.Encoding.DER, spki))
    stored = {c["serial"]: c for c in stored_certs(world)}
    record = stored.get(format(leaf.serial_number, "x"))
    assert record is not None, f"{cert} is not in the CA's store"
    assert record["protocol"] == "acme" and record["requester"].startswith("acme-account:")
    return leaf


def stored_certs(world: World) -> list[dict[str, Any]]:
    proc = run("certs", "list", "--json", "--data", str(world.served.data), check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def assert_revoked(world: World, cert: Path, chain: Path, reason: str) -> None:
    """Our OCSP responder, asked by ``openssl ocsp``, says revoked for ``reason``."""
    proc = openssl("ocsp", "-issuer", str(chain), "-cert", str(cert),
                   "-url", f"{world.served.http}/ocsp", "-CAfile",
                   str(world.served.root_pem), "-resp_text")
    assert proc.returncode == 0 and "Response verify OK" in proc.stderr, proc
    assert f"{cert}: revoked" in proc.stdout, proc.stdout
    assert f"Reason: {reason}" in proc.stdout, proc.stdout


def eab_key(world: World, profile: str = EAB_PROFILE) -> tuple[str, str]:
    proc = run("acme", "eab", "create", "--data", str(world.served.data), "--profile",
               profile, check=True)
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    return fields["kid"], fields["hmac_key"]


# -- certbot -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lineage:
    home: Path
    name: str

    @property
    def live(self) -> Path:
        return self.home / "config" / "live" / self.name


@pytest.fixture(scope="module")
def certbot_lineage(world: World, tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    """certbot register, then certonly --standalone (http-01) for one name."""
    home = tmp_path_factory.mktemp("certbot")
    name = "certbot.interop.test"
    reg = certbot(world, home, "register", "--agree-tos", "-m", "ops@interop.test")
    assert reg.returncode == 0, _output(reg)
    assert "Account registered" in reg.stdout + reg.stderr, _output(reg)
    got = certbot(world, home, "certonly", *certbot_standalone(world), "-d", name)
    assert got.returncode == 0, _output(got)
    return Lineage(home, name)


def test_ok_certbot_certonly_standalone_http01(world: World, certbot_lineage: Lineage
                                               ) -> None:
    live = certbot_lineage.live
    assert sorted(p.name for p in live.iterdir()) == [
        "README", "cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
    leaf = assert_client_files(world, live / "cert.pem", live / "chain.pem",
                               live / "privkey.pem", {certbot_lineage.name})
    # fullchain.pem is the certificate followed by the issuing CA, as servers serve it.
    full = x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())
    assert full == [leaf, world.served.issuing]


def test_ok_certbot5_ip_address_identifier(world: World, certbot5: Path, tmp_path: Path
                                           ) -> None:
    """RFC 8738 through a real client: certbot 5 orders {"type": "ip"}, answers http-01 at
    the address itself (RFC 8738 7: no Host name, no SNI), and gets an iPAddress SAN."""
    got = certbot_at(certbot5, world, tmp_path, "certonly", *certbot_standalone(world),
                     "--register-unsafely-without-email", "--agree-tos",
                     "--ip-address", "127.0.0.1", "--cert-name", "loopback")
    assert got.returncode == 0, _output(got)
    live = tmp_path / "config" / "live" / "loopback"
    leaf = assert_client_files(world, live / "cert.pem", live / "chain.pem",
                               live / "privkey.pem", {"127.0.0.1"})
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_fail_certbot5_ip_address_outside_profile(world: World, certbot5: Path,
                                                  tmp_path: Path) -> None:
    """An address the profile's ip networks do not hold is refused at newOrder."""
    got = certbot_at(certbot5, world, tmp_path, "certonly", *certbot_standalone(world),
                     "--register-unsafely-without-email", "--agree-tos",
                     "--ip-address", "192.0.2.7", "--cert-name", "doc")
    assert got.returncode != 0, _output(got)
    log = tmp_path / "logs" / "letsencrypt.log"
    said = got.stdout + got.stderr + (log.read_text() if log.exists() else "")
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in said, _output(got)
    assert not (tmp_path / "config" / "live" / "doc").exists()


def test_ok_certbot_renew_force_renewal(world: World, certbot_lineage: Lineage) -> None:
    live = certbot_lineage.live
    before = load_cert(live / "cert.pem")
    renewed = certbot(world, certbot_lineage.home, "renew", "--force-renewal",
                      "--no-random-sleep-on-renew", *certbot_standalone(world))
    assert renewed.returncode == 0, _output(renewed)
    after = assert_client_files(world, live / "cert.pem", live / "chain.pem",
                                live / "privkey.pem", {certbot_lineage.name})
    assert after.serial_number != before.serial_number


def test_ok_certbot_revoke_key_compromise(world: World, certbot_lineage: Lineage) -> None:
    live = certbot_lineage.live
    cert = load_cert(live / "cert.pem")
    revoked = certbot(world, certbot_lineage.home, "revoke", "--cert-path",
                      str(live / "cert.pem"), "--reason", "keycompromise",
                      "--no-delete-after-revoke")
    assert revoked.returncode == 0, _output(revoked)
    assert_revoked(world, live / "cert.pem", live / "chain.pem", "keyCompromise")
    stored = {c["serial"]: c for c in stored_certs(world)}[format(cert.serial_number, "x")]
    assert stored["revoked_at"] is not None


def test_ok_certbot_account_update_and_deactivate(world: World, tmp_path: Path) -> None:
    reg = certbot(world, tmp_path, "register", "--agree-tos", "-m", "old@interop.test")
    assert reg.returncode == 0, _output(reg)
    updated = certbot(world, tmp_path, "update_account", "-m", "new@interop.test")
    assert updated.returncode == 0, _output(updated)
    assert "updated" in updated.stdout + updated.stderr, _output(updated)
    # certbot forgets an account it deactivated; keep a copy to try it again afterwards.
    accounts = tmp_path / "config" / "accounts"
    shutil.copytree(accounts, tmp_path / "accounts.saved")
    gone = certbot(world, tmp_path, "unregister")
    assert gone.returncode == 0, _output(gone)
    assert "Account deactivated" in gone.stdout + gone.stderr, _output(gone)
    shutil.rmtree(accounts)
    shutil.copytree(tmp_path / "accounts.saved", accounts)
    name = "deactivated.interop.test"
    got = certbot(world, tmp_path, "certonly", *certbot_standalone(world), "-d", name)
    assert got.returncode != 0, _output(got)
    said = certbot_said(got, tmp_path)
    assert "urn:ietf:params:acme:error:unauthorized" in said, _output(got)
    assert "the account is deactivated" in said, _output(got)
    assert not any(name in c["names"] for c in stored_certs(world))


def test_fail_certbot_eab_required_without_binding(world: World, tmp_path: Path) -> None:
    reg = certbot(world, tmp_path, "register", "--agree-tos", "-m", "ops@interop.test",
                  profile=EAB_PROFILE)
    assert reg.returncode != 0, _output(reg)
    assert "external account" in (reg.stdout + reg.stderr).lower(), _output(reg)
    assert not (tmp_path / "config" / "accounts").exists() or not list(
        (tmp_path / "config" / "accounts").rglob("regr.json"))


def test_ok_certbot_eab_register_and_issue(world: World, tmp_path: Path) -> None:
    kid, hmac_key = eab_key(world)
    reg = certbot(world, tmp_path, "register", "--agree-tos", "-m", "ops@interop.test",
                  "--eab-kid", kid, "--eab-hmac-key", hmac_key, profile=EAB_PROFILE)
    assert reg.returncode == 0, _output(reg)
    name = "eab.interop.test"
    got = certbot(world, tmp_path, "certonly", *certbot_standalone(world), "-d", name,
                  profile=EAB_PROFILE)
    assert got.returncode == 0, _output(got)
    live = tmp_path / "config" / "live" / name
    leaf = assert_client_files(world, live / "cert.pem", live / "chain.pem",
                               live / "privkey.pem", {name})
    stored = {c["serial"]: c for c in stored_certs(world)}[format(leaf.serial_number, "x")]
    assert stored["profile"] == EAB_PROFILE


def test_fail_certbot_eab_key_bound_once(world: World, tmp_path: Path) -> None:
    kid, hmac_key = eab_key(world)
    eab = ["--eab-kid", kid, "--eab-hmac-key", hmac_key]
    first = certbot(world, tmp_path / "first", "register", "--agree-tos", "-m",
                    "a@interop.test", *eab, profile=EAB_PROFILE)
    assert first.returncode == 0, _output(first)
    second = certbot(world, tmp_path / "second", "register", "--agree-tos", "-m",
                     "b@interop.test", *eab, profile=EAB_PROFILE)
    assert second.returncode != 0, _output(second)
    assert "already bound" in second.stdout + second.stderr, _output(second)


def test_ok_certbot_webroot_ecdsa(world: World, tmp_path: Path) -> None:
    # --webroot: certbot writes the token file, a web server it knows nothing of serves it.
    webroot = tmp_path / "www"
    webroot.mkdir()
    name = "webroot.interop.test"
    with static_server(webroot, world.http01_port):
        got = certbot(world, tmp_path, "certonly", "--agree-tos", "-m", "ops@interop.test",
                      "--webroot", "-w", str(webroot), "--key-type", "ecdsa",
                      "--elliptic-curve", "secp384r1", "-d", name)
    assert got.returncode == 0, _output(got)
    live = tmp_path / "config" / "live" / name
    leaf = assert_client_files(world, live / "cert.pem", live / "chain.pem",
                               live / "privkey.pem", {name})
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    # certbot cleaned up its token files after validation.
    assert not [p for p in webroot.rglob("*") if p.is_file()]


def test_ok_certbot_manual_dns01_wildcard(world: World, tmp_path: Path) -> None:
    # The wildcard's authorization names the base domain (RFC 8555 7.1.4), so certbot
    # hands the hook the name whose _acme-challenge TXT record it must set.
    hook = txt_hook(world, tmp_path)
    names = {"*.cb-wild.interop.test", "cb-wild.interop.test"}
    got = certbot(world, tmp_path, "certonly", "--agree-tos", "-m", "ops@interop.test",
                  "--manual", "--preferred-challenges", "dns",
                  "--manual-auth-hook", f"{hook} present",
                  "--manual-cleanup-hook", f"{hook} cleanup",
                  "-d", "*.cb-wild.interop.test", "-d", "cb-wild.interop.test",
                  "--cert-name", "cb-wild", profile=WILD_PROFILE)
    assert got.returncode == 0, _output(got)
    live = tmp_path / "config" / "live" / "cb-wild"
    assert_client_files(world, live / "cert.pem", live / "chain.pem", live / "privkey.pem",
                        names)


def test_fail_certbot_name_outside_profile(world: World, tmp_path: Path) -> None:
    name = "www.example.com"
    got = certbot(world, tmp_path, "certonly", "--agree-tos", "-m", "ops@interop.test",
                  *certbot_standalone(world), "-d", name)
    assert got.returncode != 0, _output(got)
    said = certbot_said(got, tmp_path)
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in said, _output(got)
    assert f"DNS name {name!r} is outside this profile's names" in said, _output(got)
    assert not any(name in c["names"] for c in stored_certs(world))


# -- lego ----------------------------------------------------------------------------------


def lego_files(path: Path, name: str) -> tuple[Path, Path, Path]:
    """(certificate bundle, issuer, key) as lego saves them; ``*`` becomes ``_``."""
    base = path / "certificates" / name.replace("*", "_")
    return (base.with_name(base.name + ".crt"), base.with_name(base.name + ".issuer.crt"),
            base.with_name(base.name + ".key"))


def assert_lego_certificate(world: World, path: Path, name: str, names: set[str] | None = None
                            ) -> x509.Certificate:
    crt, issuer, key = lego_files(path, name)
    leaf = assert_client_files(world, crt, issuer, key, names or {name})
    # The bundle lego saves is the certificate followed by the issuing CA.
    assert x509.load_pem_x509_certificates(crt.read_bytes()) == [leaf, world.served.issuing]
    return leaf


@pytest.fixture(scope="module")
def lego_http01(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """lego run with http-01 for one name: (lego path, name)."""
    path = tmp_path_factory.mktemp("lego-http")
    name = "lego-http.interop.test"
    got = lego(world, path, ["--domains", name, *lego_http(world)], ["run"])
    assert got.returncode == 0, _output(got)
    return path, name


def test_ok_lego_http01(world: World, lego_http01: tuple[Path, str]) -> None:
    path, name = lego_http01
    assert_lego_certificate(world, path, name)


def test_ok_lego_renew(world: World, lego_http01: tuple[Path, str]) -> None:
    path, name = lego_http01
    before = load_cert(lego_files(path, name)[0])
    # --days 999: every certificate of ours expires sooner, so lego renews now.
    got = lego(world, path, ["--domains", name, *lego_http(world)],
               ["renew", "--days", "999", "--no-random-sleep"])
    assert got.returncode == 0, _output(got)
    after = assert_lego_certificate(world, path, name)
    assert after.serial_number != before.serial_number


def test_ok_lego_revoke(world: World, lego_http01: tuple[Path, str]) -> None:
    path, name = lego_http01
    crt, issuer, _ = lego_files(path, name)
    got = lego(world, path, ["--domains", name], ["revoke", "--keep", "--reason", "1"])
    assert got.returncode == 0, _output(got)
    assert_revoked(world, crt, issuer, "keyCompromise")


def test_ok_lego_tlsalpn01(world: World, tmp_path: Path) -> None:
    name = "lego-alpn.interop.test"
    got = lego(world, tmp_path, ["--domains", name, "--key-type", "rsa2048",
                                 *lego_tls(world)], ["run"])
    assert got.returncode == 0, _output(got)
    leaf = assert_lego_certificate(world, tmp_path, name)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)


def test_ok_lego_dns01(world: World, tmp_path: Path) -> None:
    name = "lego-dns.interop.test"
    options, env = lego_dns(world, tmp_path)
    got = lego(world, tmp_path, ["--domains", name, *options], ["run"], env=env)
    assert got.returncode == 0, _output(got)
    assert_lego_certificate(world, tmp_path, name)


def test_ok_lego_wildcard_dns01(world: World, tmp_path: Path) -> None:
    names = {"*.wild.interop.test", "wild.interop.test"}
    options, env = lego_dns(world, tmp_path)
    got = lego(world, tmp_path,
               ["--domains", "*.wild.interop.test", "--domains", "wild.interop.test",
                *options], ["run"], profile=WILD_PROFILE, env=env)
    assert got.returncode == 0, _output(got)
    assert_lego_certificate(world, tmp_path, "*.wild.interop.test", names)


def test_fail_lego_wildcard_outside_wildcard_profile(world: World, tmp_path: Path) -> None:
    options, env = lego_dns(world, tmp_path)
    got = lego(world, tmp_path, ["--domains", "*.nowild.interop.test", *options], ["run"],
               env=env)
    assert got.returncode != 0, _output(got)
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in got.stdout + got.stderr, \
        _output(got)


def test_fail_lego_ip_address_as_dns_identifier(world: World, tmp_path: Path) -> None:
    # lego 4.9 knows no RFC 8738 "ip" identifiers (they came in 4.11): it orders
    # {"type": "dns", "value": "127.0.0.1"}. An address is not a DNS name, and a dNSName
    # holding one is what RFC 8738 3 exists to prevent: refused at newOrder.
    got = lego(world, tmp_path, ["--domains", "127.0.0.1", *lego_http(world)], ["run"])
    assert got.returncode != 0, _output(got)
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in got.stderr, _output(got)
    assert "IP addresses go in ip" in got.stderr, _output(got)
    assert not lego_files(tmp_path, "127.0.0.1")[0].exists()


def test_ok_lego_eab(world: World, tmp_path: Path) -> None:
    kid, hmac_key = eab_key(world)
    name = "lego-eab.interop.test"
    got = lego(world, tmp_path, ["--eab", "--kid", kid, "--hmac", hmac_key,
                                 "--domains", name, *lego_tls(world)], ["run"],
               profile=EAB_PROFILE)
    assert got.returncode == 0, _output(got)
    assert_lego_certificate(world, tmp_path, name)


def test_fail_lego_name_outside_profile(world: World, tmp_path: Path) -> None:
    name = "www.example.com"
    got = lego(world, tmp_path, ["--domains", name, *lego_http(world)], ["run"])
    assert got.returncode != 0, _output(got)
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in got.stdout + got.stderr, \
        _output(got)
    assert not lego_files(tmp_path, name)[0].exists()
    assert not any(name in c["names"] for c in stored_certs(world))
