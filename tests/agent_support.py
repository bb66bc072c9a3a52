"""Support for the agent's tests: directories the agent accepts, the agent as a real
subprocess, a TLS service that reloads its key and certificate on SIGHUP (the deploy
target the endpoint check connects to), and the forms a private key can leak in.

The agent refuses output directories below a world-writable one (/tmp, where pytest's
tmp_path lives), so output directories are made under the repository's ignored
``.peers/agent-tmp``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .cli import CERTWRIGHT

REPO = Path(__file__).resolve().parent.parent


def _shared_ancestor(path: Path) -> bool:
    """True if ``path`` or a directory above it is writable by others (/tmp)."""
    for p in (path, *path.parents):
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_mode & 0o002:
                return True
    return False


# In the checkout when the checkout itself is somewhere safe; a clone under /tmp (as a
# CI runner may make) uses the user's cache directory instead.
SAFE_BASE = (REPO / ".peers" / "agent-tmp" if not _shared_ancestor(REPO)
             else Path.home() / ".cache" / "certwright-agent-tests")


@contextlib.contextmanager
def safe_directory() -> Iterator[Path]:
    """A fresh 0755 directory whose ancestors nobody else can write."""
    SAFE_BASE.mkdir(parents=True, exist_ok=True, mode=0o755)
    assert not _shared_ancestor(SAFE_BASE), f"{SAFE_BASE} is below a shared directory"
    path = Path(tempfile.mkdtemp(dir=SAFE_BASE))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def configure_acme(data: Path, *, resolver: str, http01: int = 80, tlsalpn01: int = 443
                   ) -> None:
    """Point the ACME server's validation at loopback: its DNS resolver, the ports it
    connects to for http-01 and tls-alpn-01, and 127.0.0.0/8 allowed as a target."""
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["acme"].update(dns_resolver=resolver, http01_port=http01, tlsalpn01_port=tlsalpn01,
                       timeout="5s")
    doc["profiles"]["tls-server"]["acme"]["validation_networks"].append("127.0.0.0/8")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


def run_agent(specs: Path, state: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CERTWRIGHT, "agent", "--specs", str(specs), "--state", str(state),
                           *args], capture_output=True, text=True, timeout=timeout,
                          env=env or agent_env(), check=False, stdin=subprocess.DEVNULL)


def write_spec(directory: Path, doc: dict[str, Any]) -> Path:
    path = directory / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def status(specs: Path, state: Path) -> dict[str, dict[str, Any]]:
    import json

    proc = run_agent(specs, state, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


def pair(output: Path, key: str = "privkey.pem", cert: str = "cert.pem"
         ) -> tuple[Any, x509.Certificate]:
    """The key and certificate a reader of the spec's file names sees now."""
    k = serialization.load_pem_private_key((output / key).read_bytes(), None)
    c = x509.load_pem_x509_certificate((output / cert).read_bytes())
    return k, c


def assert_pair_matches(output: Path, key: str = "privkey.pem", cert: str = "cert.pem"
                        ) -> x509.Certificate:
    k, c = pair(output, key, cert)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert k.public_key().public_bytes(der, spki) == c.public_key().public_bytes(der, spki), \
        "the key on disk is not the certificate's key"
    return c


def key_leak_forms(key_pem: bytes) -> list[str]:
    """Strings by which a private key would show up in a log or a request: the private
    value in hex, base64 and base64url (as in a JWK), the PEM lines that carry it, and the
    start of the PKCS#8 DER in base64 and base64url. (PEM lines holding only the public
    key are left out: a CSR rightly carries those bytes.)"""
    key = serialization.load_pem_private_key(key_pem, None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    numbers = key.private_numbers()  # type: ignore[union-attr]
    value = getattr(numbers, "private_value", None) or numbers.d
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    forms = [raw.hex(), base64.b64encode(raw).decode().rstrip("="),
             base64.urlsafe_b64encode(raw).rstrip(b"=").decode()]
    start = der.find(raw)
    assert start > 0
    lines = [line for line in key_pem.decode().splitlines() if not line.startswith("-----")]
    for i, line in enumerate(lines):
        if 48 * i < start + len(raw) and start < 48 * (i + 1):
            forms.append(line)
    forms.append(base64.b64encode(der).decode()[:40])
    forms.append(base64.urlsafe_b64encode(der).rstrip(b"=").decode()[:40])
    return forms


TLS_SERVICE = r'''
import os, signal, socket, ssl, sys, threading
cert, key, port, pidfile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
state = {"ctx": context()}
def reload(signum, frame):
    state["ctx"] = context()
signal.signal(signal.SIGHUP, reload)
signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
srv = socket.create_server(("127.0.0.1", port))
open(pidfile, "w").write(str(os.getpid()))
while True:
    try:
        conn, _ = srv.accept()
    except InterruptedError:
        continue
    try:
        with state["ctx"].wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
    except (OSError, ssl.SSLError):
        pass
'''


@contextlib.contextmanager
def tls_service(cert: Path, key: Path, port: int, workdir: Path) -> Iterator[Path]:
    """A TLS server on 127.0.0.1:port serving ``cert``/``key``, re-read on SIGHUP (the
    way nginx reloads); yields the file holding its pid."""
    script = workdir / "tls_service.py"
    script.write_text(TLS_SERVICE)
    pidfile = workdir / "tls_service.pid"
    proc = subprocess.Popen([sys.executable, str(script), str(cert), str(key), str(port),
                             str(pidfile)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    "the TLS service did not start"
                time.sleep(0.05)
        yield pidfile
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def wait_served(port: int, sni: str, serial: int, timeout: float = 10) -> None:
    """Wait until 127.0.0.1:port serves ``serial`` for ``sni`` (a reload is asynchronous)."""
    deadline = time.monotonic() + timeout
    while (got := served_serial(port, sni)) != serial:
        assert time.monotonic() < deadline, f"serves {got:x}, not {serial:x}"
        time.sleep(0.1)


def served_serial(port: int, sni: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
