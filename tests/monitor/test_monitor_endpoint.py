"""Declared TLS endpoints, probed by `certwright monitor check` (a real process) against a
TLS server on loopback (Python's ssl module; nginx is not installed here): stale
deployment after a renewal that was not reloaded, resolved by the reload; a foreign
certificate; an endpoint that is down. Exit codes and --json."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certwright.ca import datadir
from certwright.ca.service import Issued
from tests.cli import run
from tests.helpers import csr, key, request
from tests.monitor.monitor_support import add_monitor_config


class TlsEndpoint:
    """Serves whatever certificate it was last ``load``ed with (nginx's reload)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.ctx: ssl.SSLContext | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def load(self, cert_pem: Path, key_pem: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert_pem), str(key_pem))
        self.ctx = ctx

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                conn.settimeout(5)
                assert self.ctx is not None
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.sock.close()
        self.thread.join(5)


def write_pair(tmp: Path, name: str, cert: x509.Certificate, k: Any,
               chain: tuple[x509.Certificate, ...] = ()) -> tuple[Path, Path]:
    c, kf = tmp / f"{name}.pem", tmp / f"{name}.key"
    c.write_bytes(b"".join(x.public_bytes(serialization.Encoding.PEM) for x in (cert, *chain)))
    kf.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return c, kf


def issue(data: Path, tmp: Path, label: str) -> tuple[Issued, Path, Path]:
    k = key()
    with datadir.opened(data) as ca:
        out = ca.enroll(request(csr(["stale.test"], private_key=k)))
    assert isinstance(out, Issued)
    return (out, *write_pair(tmp, label, out.certificate, k, out.chain))


def check(data: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    proc = run("monitor", "check", "--data", str(data), "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["failing"] == (proc.returncode == 1)
    return proc.returncode, doc["findings"]


@contextlib.contextmanager
def endpoint() -> Iterator[TlsEndpoint]:
    e = TlsEndpoint()
    try:
        yield e
    finally:
        e.close()


def test_ok_stale_deployment_until_reload(ca_dir: Path, tmp_path: Path) -> None:
    with endpoint() as web:
        add_monitor_config(ca_dir, f"""
monitor:
  grace: 0s
  endpoints:
    - {{address: "127.0.0.1:{web.port}", sni: stale.test, names: [stale.test],
        profile: tls-server}}
""")
        old, cert_a, key_a = issue(ca_dir, tmp_path, "a")
        web.load(cert_a, key_a)
        assert check(ca_dir) == (0, [])

        new, cert_b, key_b = issue(ca_dir, tmp_path, "b")  # renewed; nobody reloaded
        code, findings = check(ca_dir)
        assert code == 1
        assert [(f["kind"], f["severity"], f["subject"]) for f in findings] == [
            ("stale-deployment", "warning", f"endpoint:127.0.0.1:{web.port}/stale.test")]
        message = findings[0]["message"]
        assert old.record.serial in message and new.record.serial in message
        assert check(ca_dir, "--fail-on", "critical")[0] == 0

        web.load(cert_b, key_b)  # the reload hook ran
        assert check(ca_dir) == (0, [])

        # A certificate from another CA: the expected one is missing.
        k = key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stale.test")])
        now = dt.datetime.now(dt.UTC)
        foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(k.public_key()).serial_number(7)
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("stale.test")]),
                                  critical=False)
                   .sign(k, hashes.SHA256()))
        web.load(*write_pair(tmp_path, "foreign", foreign, k))
        code, findings = check(ca_dir, "--fail-on", "critical")
        assert code == 1
        assert [(f["kind"], f["severity"]) for f in findings] == [("missing", "critical")]
        assert "not one this CA issued" in findings[0]["message"]

    code, findings = check(ca_dir)  # the endpoint is gone
    assert code == 1 and [f["kind"] for f in findings] == ["missing"]
    assert "ConnectionRefusedError" in findings[0]["message"]


def test_ok_check_table_output(ca_dir: Path) -> None:
    proc = run("monitor", "check", "--data", str(ca_dir))
    assert proc.returncode == 0 and proc.stdout == "no open findings\n"
