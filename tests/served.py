"""A real ``certwright serve`` in a subprocess, and the real clients that talk to it.

``serving()`` initializes a CA with ``certwright init`` on two free loopback ports (so the
CRL, OCSP and caIssuers URLs written into certificates point at this server), starts
``certwright serve``, waits for /health, and at the end stops it with SIGTERM: it must
exit 0 within a few seconds and log no traceback. Every certificate the CA issued is
then linted and verified (``conftest.lint_and_verify``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.ca import datadir, hierarchy
from certwright.ca.service import Issued

from .cli import CERTWRIGHT, run
from .conftest import lint_and_verify, require_peer
from .helpers import csr, request

STOP_WITHIN = 5.0  # seconds between SIGTERM and exit


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel just handed out on 127.0.0.1 (all bound at once)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclasses.dataclass(frozen=True)
class Fetched:
    """What curl got: status 0 when it got no HTTP answer at all (see exit_code)."""

    status: int
    content_type: str
    body: bytes
    exit_code: int
    stderr: str


def curl(url: str, *args: str, input: bytes | None = None) -> Fetched:
    prog = require_peer("curl", "curl")
    proc = subprocess.run(
        [prog, "-sS", "--noproxy", "*", "--max-time", "20", "-o", "-",
         "-w", "%{stderr}\n@@ %{http_code} %{content_type}\n", *args, url],
        input=input, capture_output=True, timeout=30, check=False,
    )
    err = proc.stderr.decode(errors="replace")
    last = [line for line in err.splitlines() if line.startswith("@@ ")][-1]
    _, code, *ctype = last.split(" ", 2)
    return Fetched(int(code), ctype[0] if ctype else "", proc.stdout, proc.returncode,
                   err)


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run openssl with binary ``input``; its output decoded as text."""
    prog = require_peer("openssl", "openssl")
    proc = subprocess.run([prog, *args], input=input if input is not None else b"",
                          capture_output=True, timeout=30, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


@dataclasses.dataclass(frozen=True)
class Served:
    data: Path
    http_port: int
    https_port: int
    issuer_id: str
    root_id: str
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def root_pem(self) -> Path:
        return datadir.Layout(self.data).root_pem

    @property
    def chain_pem(self) -> Path:
        return datadir.Layout(self.data).chain_pem

    @property
    def issuing(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain_pem.read_bytes())


def issue_leaf(data: Path, name: str, out: Path) -> x509.Certificate:
    """Issue a tls-server certificate for ``name`` in-process; write its PEM to ``out``."""
    with datadir.opened(data) as ca:
        issued = ca.enroll(request(csr([name])))
    assert isinstance(issued, Issued)
    out.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    return issued.certificate


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"certwright serve exited with {proc.returncode}: "
                                 f"{log.read_text(errors='replace')}")
        if curl(url, "--max-time", "2").status == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"certwright serve did not answer {url} within 30 s")


def _idle_keepalive(port: int) -> socket.socket:
    """A connection that has had one answer and stays open, as monitoring clients keep."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = conn.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    return conn


def _stop(proc: subprocess.Popen[bytes], port: int) -> tuple[int, float]:
    """SIGTERM with an idle keep-alive connection open, then wait: (exit code, seconds).
    Kills it if it hangs."""
    with _idle_keepalive(port):
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_WITHIN + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("certwright serve ignored SIGTERM") from None
    return code, time.monotonic() - started


@contextlib.contextmanager
def serving(base: Path, configure: Callable[[Path], None] | None = None,
            serve_args: Sequence[str] = ()) -> Iterator[Served]:
    """``configure(data)``, if given, runs after ``certwright init`` and before the server
    starts: it may edit ``data / "certwright.yaml"`` (ACME validation ports, profiles).
    ``serve_args`` go to ``certwright serve`` (``--workers 2``)."""
    require_peer("curl", "curl")
    require_peer("openssl", "openssl")
    data = base / "ca"
    http_port, https_port = free_ports(2)
    run("init", "--data", str(data), "--http", f"127.0.0.1:{http_port}",
        "--https", f"127.0.0.1:{https_port}", check=True)
    if configure is not None:
        configure(data)
    _, config, _ = datadir.load(data)
    assert config.server.http_url == f"http://127.0.0.1:{http_port}"
    issuing = x509.load_pem_x509_certificate((data / "chain.pem").read_bytes())
    root = x509.load_pem_x509_certificate((data / "root.pem").read_bytes())
    log, out = base / "serve.err", base / "serve.out"
    with log.open("wb") as err_file, out.open("wb") as out_file:
        proc = subprocess.Popen([CERTWRIGHT, "serve", "--data", str(data), *serve_args],
                                stdout=out_file, stderr=err_file)
    served = Served(data, http_port, https_port, hierarchy.issuer_id(issuing),
                    hierarchy.issuer_id(root), log)
    try:
        _wait_healthy(proc, f"{served.http}/health", log)
        yield served
    finally:
        running = proc.poll() is None
        code, took = _stop(proc, http_port) if running else (proc.returncode, 0.0)
    stderr = log.read_text(errors="replace")
    assert running, f"certwright serve died during the tests (exit {code}): {stderr}"
    assert code == 0, f"certwright serve exited {code} on SIGTERM: {stderr}"
    assert took < STOP_WITHIN, f"certwright serve took {took:.1f} s to stop"
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    assert f"certwright serving CA {served.issuer_id}" in out.read_text()
    lint_and_verify(data)
