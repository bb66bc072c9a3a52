"""The agent, a real subprocess, enrolling over ACME from a real ``certwright serve``.

Validation is real: the server resolves the names through pebble-challtestsrv (every
name is 127.0.0.1 there) and fetches http-01 from the agent's own standalone listener.
The deploy target is a small TLS service that re-reads its files on SIGHUP, as nginx
does; the endpoint check connects to it.

One server, one challtestsrv, one TLS service for the module.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.agent.install import CRASH_ENV
from tests.agent_support import (
    agent_env,
    assert_pair_matches,
    configure_acme,
    key_leak_forms,
    run_agent,
    safe_directory,
    served_serial,
    status,
    tls_service,
    write_spec,
)
from tests.challtestsrv import ChallTestSrv, challtestsrv
from tests.cli import CERTWRIGHT
from tests.served import Served, free_ports, openssl, serving

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl")


@dataclasses.dataclass(frozen=True)
class World:
    served: Served
    chall: ChallTestSrv
    http01_port: int
    tlsalpn01_port: int
    base: Path  # safe for output directories

    @property
    def directory(self) -> str:
        return f"{self.served.https}/acme/directory"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("agent-acme")
    http01, tlsalpn01 = free_ports(2)
    with challtestsrv(base, http01=False, tlsalpn01=False) as chall, \
            serving(base, lambda d: configure_acme(d, resolver=chall.resolver, http01=http01,
                                                   tlsalpn01=tlsalpn01)
                    ) as served, safe_directory() as safe:
        yield World(served, chall, http01, tlsalpn01, safe)


@dataclasses.dataclass
class Agent:
    """One agent installation: its specs directory, state directory, output directory."""

    world: World
    root: Path

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def out(self, spec: str) -> Path:
        return self.root / "out" / spec

    def spec(self, name: str, names: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out = self.out(name)
        out.mkdir(parents=True, exist_ok=True, mode=0o755)
        doc: dict[str, Any] = {
            "name": name,
            "issuer": {"acme": {
                "directory": self.world.directory,
                "contact": ["ops@agent.test"],
                "tls_trust": str(self.world.served.root_pem),
                "challenge": {"http-01": {"standalone": f"127.0.0.1:{self.world.http01_port}"}},
            }},
            "names": names,
            "output": {"directory": str(out), "chain": "chain.pem",
                       "fullchain": "fullchain.pem"},
            "trust_anchor": str(self.world.served.root_pem),
            **extra,
        }
        write_spec(self.specs, doc)
        return doc

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_agent(self.specs, self.state, *args, env=agent_env(**env))

    def status(self) -> dict[str, dict[str, Any]]:
        return status(self.specs, self.state)


@pytest.fixture(scope="module")
def agent(world: World) -> Agent:
    root = world.base / "agent"
    (root / "specs").mkdir(parents=True, mode=0o755)
    return Agent(world, root)


# -- enrollment with names from nginx, deploy, endpoint check ---------------------------


NGINX = """
events {}
http {
    include sites/*.conf;
    server {
        listen 443 ssl;
        server_name web.agent.test www.agent.test _;
        ssl_certificate %(out)s/fullchain.pem;
        ssl_certificate_key %(out)s/privkey.pem;
    }
}
"""
SITE = "server { listen 443 ssl; server_name api.agent.test ~^(?<x>.+)\\.agent\\.test$; }\n"


@dataclasses.dataclass
class Web:
    agent: Agent
    nginx: Path
    port: int
    pidfile: Path
    first: subprocess.CompletedProcess[str]
    hook_log: Path


@pytest.fixture(scope="module")
def web(agent: Agent) -> Iterator[Web]:
    """The spec "web": names from an nginx configuration (with an include) and a static
    one; a config test hook that records its environment; a deploy hook that sends SIGHUP
    to the TLS service; an endpoint check. Enrolled once with debug logging (the acme
    library then logs every request body it sends)."""
    root = agent.root / "nginx"
    (root / "sites").mkdir(parents=True)
    out = agent.out("web")
    out.mkdir(parents=True, mode=0o755)
    nginx = root / "nginx.conf"
    nginx.write_text(NGINX % {"out": out})
    (root / "sites" / "api.conf").write_text(SITE)
    bootstrap = agent.root / "bootstrap"
    bootstrap.mkdir(mode=0o755)
    hook_log = agent.root / "hooks.log"
    check = agent.root / "config-test.sh"
    check.write_text(f'#!/bin/sh\nenv | grep ^CERTWRIGHT_ | sort >> {hook_log}\n'
                     f'echo --- >> {hook_log}\n')
    check.chmod(0o755)
    (port,) = free_ports(1)
    # The service starts on a self-signed pair, like any server before the agent came.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-subj", "/CN=web.agent.test", "-days", "1",
            "-keyout", str(bootstrap / "key.pem"), "-out", str(bootstrap / "cert.pem"))
    (out / "privkey.pem").symlink_to(bootstrap / "key.pem")
    (out / "fullchain.pem").symlink_to(bootstrap / "cert.pem")
    with tls_service(out / "fullchain.pem", out / "privkey.pem", port, agent.root) as pidfile:
        agent.spec("web", [{"nginx": str(nginx)}, {"static": ["web.agent.test",
                                                               "WWW.Agent.Test."]}],
                   hooks={"config_test": [str(check)],
                          "deploy": ["sh", "-c", f"kill -HUP $(cat {pidfile})"]},
                   endpoints=[{"host": "127.0.0.1", "port": port, "sni": "web.agent.test",
                               "settle": "1s"}])
        first = agent.run("--log-level", "debug", "enroll", "web")
        yield Web(agent, nginx, port, pidfile, first, hook_log)


def test_ok_enroll_names_from_nginx_installs_and_deploys(web: Web) -> None:
    agent = web.agent
    assert web.first.returncode == 0, web.first.stderr
    out = agent.out("web")
    cert = assert_pair_matches(out)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == [
        "api.agent.test", "web.agent.test", "www.agent.test"]
    # The spec's names are links into the live version; the key is 0600 from creation.
    assert os.readlink(out / "privkey.pem") == ".certwright/web/live/key.pem"
    live = out / ".certwright" / "web" / "live"
    assert (live / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (live / "cert.pem").stat().st_mode & 0o777 == 0o644
    # The full chain verifies with openssl to the CA's root.
    v = openssl("verify", "-CAfile", str(agent.world.served.root_pem),
                "-untrusted", str(out / "chain.pem"), str(out / "cert.pem"))
    assert v.returncode == 0 and ": OK" in v.stdout, v
    # The deploy hook reloaded the service, which now serves the new certificate.
    assert served_serial(web.port, "web.agent.test") == cert.serial_number
    s_client = openssl("s_client", "-connect", f"127.0.0.1:{web.port}",
                       "-servername", "web.agent.test")
    served = x509.load_pem_x509_certificate(
        re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", s_client.stdout,
                  re.S).group(0).encode())  # type: ignore[union-attr]
    assert served.serial_number == cert.serial_number
    # The config test hook saw the file paths, the names and the serial.
    env = web.hook_log.read_text()
    assert f"CERTWRIGHT_KEY_FILE={out / 'privkey.pem'}" in env
    assert f"CERTWRIGHT_SERIAL={cert.serial_number:x}" in env
    assert "CERTWRIGHT_NAMES=dns:web.agent.test dns:www.agent.test dns:api.agent.test" in env


def test_ok_status_records_how_it_was_enrolled(web: Web) -> None:
    row = web.agent.status()["web"]
    cert = assert_pair_matches(web.agent.out("web"))
    assert row["serial"] == f"{cert.serial_number:x}"
    assert (row["protocol"], row["validation"]) == ("acme", "http-01 standalone")
    assert row["issuer"] == web.agent.world.directory
    assert row["account"] and "/acme/" in row["account"]
    assert row["last_error"] is None
    # Our server offers renewalInfo (RFC 9773): the renewal time lies in its window,
    # by default from 2/3 to 5/6 of the lifetime.
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    at = dt.datetime.fromisoformat(row["next_renewal"])
    life = na - nb
    assert nb + life * 2 / 3 - dt.timedelta(seconds=1) <= at <= nb + life * 5 / 6, (at, nb, na)
    # Plan: not due, each name with the place it came from, the regex and "_" skipped.
    plan = web.agent.run("plan", "--json", "web")
    assert plan.returncode == 0, plan.stderr
    (p,) = json.loads(plan.stdout)
    assert p["due"] is False and p["drift"] == {"added": [], "removed": []}
    assert p["names"]["dns:www.agent.test"] == [f"nginx {web.nginx}:7", "static"]
    assert p["names"]["dns:api.agent.test"] == [f"nginx {web.nginx.parent}/sites/api.conf:1"]
    assert {s["text"] for s in p["skipped"]} == {"_", "~^(?<x>.+)\\.agent\\.test$"}
    text = web.agent.run("status")
    assert text.returncode == 0 and "NEXT RENEWAL" in text.stdout and "web" in text.stdout


def test_ok_private_key_in_no_request_and_no_log_line(web: Web) -> None:
    """The acme library logs every request it sends at debug level (the whole JWS); the
    server logs and stores what it receives. The key is in none of them."""
    key_pem = (web.agent.out("web") / "privkey.pem").read_bytes()
    forms = key_leak_forms(key_pem)
    assert len(forms) >= 6
    agent_output = web.first.stdout + web.first.stderr
    posts = re.findall(r"Sending POST request to (\S+):", agent_output)
    assert any(u.endswith("/finalize") or "finalize" in u for u in posts), posts
    payloads = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode(errors="replace")
                for p in re.findall(r'"payload": "([A-Za-z0-9_-]*)"', agent_output)]
    assert any('"csr"' in p for p in payloads), "the request bodies were not captured"
    served = web.agent.world.served
    server_side = [served.log.read_bytes(), (served.log.parent / "serve.out").read_bytes()]
    server_side += [p.read_bytes() for p in served.data.glob("certwright.db*")]
    for form in forms:
        assert form not in agent_output, "the private key is in the agent's output"
        assert all(form not in p for p in payloads), "the private key is in a request"
        assert all(form.encode() not in blob for blob in server_side), \
            "the private key reached the server"


def test_ok_drift_enrolls_the_new_names(web: Web) -> None:
    agent = web.agent
    old = assert_pair_matches(agent.out("web"))
    (web.nginx.parent / "sites" / "api.conf").write_text(
        "server { server_name api.agent.test new.agent.test; }\n")
    plan = agent.run("plan", "web")
    assert plan.returncode == 0, plan.stderr
    assert "web: DUE (names changed)" in plan.stdout
    assert "drift     + dns:new.agent.test" in plan.stdout
    proc = agent.run("enroll")  # every spec that is due
    assert proc.returncode == 0, proc.stderr
    new = assert_pair_matches(agent.out("web"))
    assert new.serial_number != old.serial_number
    assert "new.agent.test" in new.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert served_serial(web.port, "web.agent.test") == new.serial_number
    # The previous version is kept for a manual rollback; older ones are pruned.
    versions = sorted(p.name for p in (agent.out("web") / ".certwright" / "web").iterdir()
                      if p.name.isdigit())
    assert len(versions) == 2, versions


# -- failures: the old certificate stays ----------------------------------------------


def _serial_on_disk(out: Path) -> int:
    return assert_pair_matches(out).serial_number


def test_fail_config_test_rolls_back(web: Web) -> None:
    agent = web.agent
    doc = yaml.safe_load((agent.specs / "web.yaml").read_text())
    before = _serial_on_disk(agent.out("web"))
    failing = dict(doc, hooks={**doc["hooks"], "config_test": ["sh", "-c",
                                                               "echo 'emerg: bad'; exit 1"]})
    write_spec(agent.specs, failing)
    try:
        proc = agent.run("enroll", "web")
    finally:
        write_spec(agent.specs, doc)
    assert proc.returncode == 1
    assert "config_test hook sh exited with 1: emerg: bad" in proc.stdout
    assert "rolled back to the previous certificate" in proc.stdout
    assert _serial_on_disk(agent.out("web")) == before
    assert served_serial(web.port, "web.agent.test") == before
    row = agent.status()["web"]
    assert row["serial"] == f"{before:x}" and "config_test hook" in row["last_error"]


def test_fail_endpoint_not_serving_new_certificate_rolls_back(web: Web) -> None:
    agent = web.agent
    doc = yaml.safe_load((agent.specs / "web.yaml").read_text())
    before = _serial_on_disk(agent.out("web"))
    # A deploy hook that reloads nothing: the service keeps serving the old certificate.
    write_spec(agent.specs, dict(doc, hooks={**doc["hooks"], "deploy": ["true"]}))
    try:
        proc = agent.run("enroll", "web")
    finally:
        write_spec(agent.specs, doc)
    assert proc.returncode == 1
    assert f"serves serial {before:x}, not the new" in proc.stdout, proc.stdout
    assert _serial_on_disk(agent.out("web")) == before
    row = agent.status()["web"]
    assert "endpoint 127.0.0.1" in row["last_error"] and row["failures"] >= 1
    # The failure schedules a retry; plan says so instead of enrolling at once.
    assert row["retry_at"] is not None


def test_fail_ca_down_keeps_the_certificate_and_records_the_error(web: Web) -> None:
    agent = web.agent
    doc = yaml.safe_load((agent.specs / "web.yaml").read_text())
    before = _serial_on_disk(agent.out("web"))
    (dead,) = free_ports(1)
    down = json.loads(json.dumps(doc))
    down["issuer"]["acme"]["directory"] = f"https://localhost:{dead}/acme/directory"
    write_spec(agent.specs, down)
    try:
        proc = agent.run("enroll", "web")
        first = agent.status()["web"]
        proc2 = agent.run("enroll", "web")
        second = agent.status()["web"]
    finally:
        write_spec(agent.specs, doc)
    assert proc.returncode == 1 and proc2.returncode == 1
    assert f"localhost:{dead}" in first["last_error"]
    assert "Connection" in first["last_error"] or "refused" in first["last_error"]
    assert second["failures"] == first["failures"] + 1
    assert _serial_on_disk(agent.out("web")) == before


# -- killed at each step: the pair on disk always matches ------------------------------

STEPS = ["key-written", "files-written", "live-staged", "live-switched", "linked"]


def test_ok_killed_at_each_step_the_pair_still_matches(agent: Agent) -> None:
    agent.spec("crash", [{"static": ["crash.agent.test"]}])
    out = agent.out("crash")
    first = agent.run("enroll", "crash")
    assert first.returncode == 0, first.stderr
    serials = {assert_pair_matches(out).serial_number}
    for step in STEPS:
        proc = agent.run("enroll", "crash", **{CRASH_ENV: step})
        assert proc.returncode == -signal.SIGKILL, (step, proc.returncode, proc.stderr)
        cert = assert_pair_matches(out)
        for role in ("chain.pem", "fullchain.pem"):
            assert (out / role).exists(), (step, role)
        if step in ("key-written", "files-written", "live-staged"):
            assert cert.serial_number in serials, step  # still the old pair
        else:
            assert cert.serial_number not in serials, step  # already the new pair
            serials.add(cert.serial_number)
        fullchain = x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes())
        assert fullchain[0] == cert, step
    # The key staged before the first kill is picked up again; a clean run then leaves
    # the live version and the one before it, and no temporary files.
    last = agent.run("enroll", "crash")
    assert last.returncode == 0, last.stderr
    assert_pair_matches(out)
    store = out / ".certwright" / "crash"
    assert len([p for p in store.iterdir() if p.name.isdigit()]) == 2
    assert not [p for p in store.iterdir() if p.name.startswith(".")]
    assert not [p for p in out.iterdir() if p.name.endswith((".tmp", ".link"))]


def test_ok_staged_key_reused_after_a_kill(agent: Agent) -> None:
    agent.spec("staged", [{"static": ["staged.agent.test"]}])
    killed = agent.run("enroll", "staged", **{CRASH_ENV: "key-written"})
    assert killed.returncode == -signal.SIGKILL
    # First enrollment killed before the request: nothing is live yet.
    assert not (agent.out("staged") / "cert.pem").exists()
    (staged,) = [p for p in (agent.out("staged") / ".certwright" / "staged").iterdir()]
    staged_key = (staged / "key.pem").read_bytes()
    assert (staged / "key.pem").stat().st_mode & 0o777 == 0o600
    proc = agent.run("enroll", "staged")
    assert proc.returncode == 0, proc.stderr
    assert "reusing the key staged in version" in proc.stderr
    assert (agent.out("staged") / "privkey.pem").read_bytes() == staged_key


# -- tls-alpn-01, key reuse, PKCS#12 -------------------------------------------------


def test_ok_tls_alpn_01_standalone(agent: Agent) -> None:
    """RFC 8737: the server connects to the agent's own listener (the port its
    tlsalpn01_port setting names), asks for ALPN acme-tls/1 with each name as SNI, and
    checks the validation certificate's critical acmeIdentifier extension."""
    listen = f"127.0.0.1:{agent.world.tlsalpn01_port}"
    doc = agent.spec("alpn", [{"static": ["alpn.agent.test", "www.alpn.agent.test"]}])
    doc["issuer"]["acme"]["challenge"] = {"tls-alpn-01": {"standalone": listen}}
    write_spec(agent.specs, doc)
    proc = agent.run("--log-level", "info", "enroll", "alpn")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert = assert_pair_matches(agent.out("alpn"))
    assert sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                  .value.get_values_for_type(x509.DNSName)) == [
        "alpn.agent.test", "www.alpn.agent.test"]
    assert proc.stderr.count("tls-alpn-01: answered 127.0.0.1") >= 2, proc.stderr
    assert agent.status()["alpn"]["validation"] == "tls-alpn-01 standalone"


def test_fail_tls_alpn_01_validation_fails_and_is_reported(agent: Agent) -> None:
    """The agent listens on another port than the one the CA connects to: the
    authorization turns invalid, and the CA's problem is what the agent reports."""
    (elsewhere,) = free_ports(1)
    doc = agent.spec("alpn-miss", [{"static": ["miss.agent.test"]}])
    doc["issuer"]["acme"]["challenge"] = {"tls-alpn-01": {"standalone":
                                                          f"127.0.0.1:{elsewhere}"}}
    write_spec(agent.specs, doc)
    proc = agent.run("enroll", "alpn-miss")
    assert proc.returncode == 1
    assert "validation failed: miss.agent.test: urn:ietf:params:acme:error:connection" \
        in proc.stdout, proc.stdout
    assert not (agent.out("alpn-miss") / "cert.pem").exists()
    row = agent.status()["alpn-miss"]
    assert row["serial"] is None and "validation failed" in row["last_error"]


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def test_ok_key_reuse_keeps_the_public_key_on_renewal(agent: Agent) -> None:
    agent.spec("reuse", [{"static": ["reuse.agent.test"]}],
               key={"type": "rsa", "bits": 2048, "reuse": True})
    agent.spec("fresh", [{"static": ["fresh.agent.test"]}])
    assert (p := agent.run("enroll", "reuse", "fresh")).returncode == 0, p.stderr
    first = {n: assert_pair_matches(agent.out(n)) for n in ("reuse", "fresh")}
    assert (p := agent.run("enroll", "reuse", "fresh")).returncode == 0, p.stderr
    second = {n: assert_pair_matches(agent.out(n)) for n in ("reuse", "fresh")}
    for name in ("reuse", "fresh"):
        assert second[name].serial_number != first[name].serial_number, name
    # key.reuse: the renewed certificate certifies the same public key (RSA 2048 as the
    # spec says); without it, every renewal brings a new key.
    assert _spki(second["reuse"]) == _spki(first["reuse"])
    assert second["reuse"].public_key().key_size == 2048  # type: ignore[union-attr]
    assert _spki(second["fresh"]) != _spki(first["fresh"])
    plan = agent.run("plan", "reuse")
    assert "key       RSA 2048 (reused on renewal)" in plan.stdout, plan.stdout


def test_ok_pkcs12_with_passphrase_file_opens_with_openssl(agent: Agent) -> None:
    secrets = agent.root / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    passphrase = secrets / "p12.pass"
    passphrase.write_text("correct horse battery staple\n")
    doc = agent.spec("p12", [{"static": ["p12.agent.test"]}])
    doc["output"]["pkcs12"] = {"file": "bundle.p12", "passphrase_file": str(passphrase)}
    write_spec(agent.specs, doc)
    proc = agent.run("enroll", "p12")
    assert proc.returncode == 0, proc.stderr
    out = agent.out("p12")
    cert = assert_pair_matches(out)
    bundle = out / "bundle.p12"
    assert os.readlink(bundle) == ".certwright/p12/live/bundle.p12"
    assert bundle.stat().st_mode & 0o777 == 0o600  # it holds the key
    opened = openssl("pkcs12", "-in", str(bundle), "-passin", f"file:{passphrase}",
                     "-nodes")
    assert opened.returncode == 0, opened.stderr
    key_pem = re.search(r"-----BEGIN PRIVATE KEY-----.*?-----END PRIVATE KEY-----",
                        opened.stdout, re.S)
    assert key_pem is not None, opened.stdout
    key = serialization.load_pem_private_key(key_pem.group(0).encode(), None)
    assert _spki(key) == _spki(serialization.load_pem_private_key(
        (out / "privkey.pem").read_bytes(), None))
    certs = x509.load_pem_x509_certificates(opened.stdout.encode())
    assert certs[0] == cert and len(certs) == 2  # the leaf, then the issuing CA
    # The wrong passphrase opens nothing.
    wrong = secrets / "wrong.pass"
    wrong.write_text("incorrect\n")
    refused = openssl("pkcs12", "-in", str(bundle), "-passin", f"file:{wrong}", "-nodes")
    assert refused.returncode != 0


# -- adopt, then renew -----------------------------------------------------------------


def test_ok_adopt_a_manual_certificate_then_renew_it(agent: Agent) -> None:
    out = agent.out("manual")
    out.mkdir(parents=True, mode=0o755)
    # Enrolled by hand: a key and a CSR made with openssl, issued by `certwright issue`.
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
            "-subj", "/CN=manual.agent.test", "-addext", "subjectAltName=DNS:manual.agent.test",
            "-keyout", str(out / "site.key"), "-out", str(agent.root / "manual.csr"))
    issued = subprocess.run([CERTWRIGHT, "issue", "--data", str(agent.world.served.data),
                             "--csr", str(agent.root / "manual.csr"),
                             "--out", str(out / "site.crt")],
                            capture_output=True, text=True, check=False)
    assert issued.returncode == 0, issued.stderr
    manual = x509.load_pem_x509_certificate((out / "site.crt").read_bytes())
    (agent.root / "site.key.orig").write_bytes((out / "site.key").read_bytes())
    proc = agent.run("adopt", str(out / "site.crt"), "--key", str(out / "site.key"),
                     "--name", "manual", "--trust-anchor", str(agent.world.served.root_pem),
                     "--acme-directory", agent.world.directory,
                     "--tls-trust", str(agent.world.served.root_pem),
                     "--http01-standalone", f"127.0.0.1:{agent.world.http01_port}")
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load((agent.specs / "manual.yaml").read_text())
    assert spec["names"] == [{"static": ["manual.agent.test"]}]
    assert spec["key"] == {"type": "ecdsa", "curve": "P-384"}
    row = agent.status()["manual"]
    assert row["serial"] == f"{manual.serial_number:x}"
    assert row["validation"] == "adopted (enrolled by hand)"
    # Renewal over ACME: the plain files become links, with the hand-made pair kept as a
    # version of its own.
    renewed = agent.run("enroll", "--force", "manual")
    assert renewed.returncode == 0, renewed.stderr
    cert = assert_pair_matches(out, "site.key", "site.crt")
    assert cert.serial_number != manual.serial_number
    assert (out / "site.crt").is_symlink()
    store = out / ".certwright" / "manual"
    live = os.readlink(store / "live")
    (kept,) = [p for p in store.iterdir() if p.name.isdigit() and p.name != live]
    assert x509.load_pem_x509_certificate((kept / "cert.pem").read_bytes()) == manual
    assert (kept / "key.pem").read_bytes() == (agent.root / "site.key.orig").read_bytes()


# -- the daemon ------------------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_ok_run_enrolls_rereads_specs_on_sighup_and_stops_on_sigterm(world: World) -> None:
    root = world.base / "daemon"
    (root / "specs").mkdir(parents=True, mode=0o755)
    daemon = Agent(world, root)
    daemon.spec("one", [{"static": ["one.agent.test"]}])
    log = (root / "agent.log").open("w")
    proc = subprocess.Popen([CERTWRIGHT, "agent", "--specs", str(daemon.specs), "--state",
                             str(daemon.state), "run", "--check-interval", "1h"],
                            stdout=log, stderr=subprocess.STDOUT, env=agent_env())
    try:
        _wait_for(lambda: (daemon.out("one") / "cert.pem").exists(), 60, "one enrolled")
        daemon.spec("two", [{"static": ["two.agent.test"]}])
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: (daemon.out("two") / "cert.pem").exists(), 60, "two enrolled")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (root / "agent.log").read_text()
    assert code == 0, text
    assert took < 5, took
    assert "specs re-read: 2 spec(s)" in text and "agent stopped" in text
    assert "Traceback" not in text
    assert_pair_matches(daemon.out("one"))
    assert_pair_matches(daemon.out("two"))
