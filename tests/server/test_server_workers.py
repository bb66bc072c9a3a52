"""``certwright serve --workers N``: several processes on the same listeners and store.

A client's requests land on whichever process accepts its connection, so state that
one process hands out (an ACME nonce, an account, an order) must hold in the others.
The server stops as one: SIGTERM ends every worker; a worker that dies stops the rest
with a non-zero exit, so a supervisor restarts the whole server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acme_client import Client
from tests.cli import CERTWRIGHT, run
from tests.served import Served, free_ports, serving

pytestmark = pytest.mark.peer("curl")


def _workers_of(data: Path) -> list[int]:
    """PIDs of the ``certwright serve`` processes serving ``data``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and str(data).encode() in cmdline:
            pids.append(int(entry))
    return sorted(pids)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("workers"), serve_args=("--workers", "2")) as s:
        yield s
    assert _workers_of(s.data) == [], "a worker outlived the server"


def test_ok_two_processes_serve(served: Served) -> None:
    assert len(_workers_of(served.data)) == 2


def test_ok_acme_state_holds_across_connections(served: Served) -> None:
    """Each Client is its own connection, so its requests may reach either process: a
    nonce from one connection is good on another, once; accounts and orders made
    through one are found through the others."""
    url = f"https://localhost:{served.https_port}/acme/directory"
    root = str(served.root_pem)
    first = Client(url, root)
    others = [Client(url, root, key=first.key) for _ in range(6)]
    try:
        reg = first.register(contact=["mailto:ops@example.test"])
        assert reg.status_code == 201, reg.text
        for i, c in enumerate(others):
            found = c.register()
            assert found.status_code == 200, found.text
            assert found.headers["Location"] == first.kid
            nonce = others[i - 1].nonce()  # handed out on another connection
            made = c.post(c.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": f"w{i}.svc.test"}]}, nonce=nonce)
            assert made.status_code == 201, made.text
            again = first.post(first.directory["newOrder"], {"identifiers": [
                {"type": "dns", "value": f"again{i}.svc.test"}]}, nonce=nonce)
            assert again.status_code == 400, again.text
            assert again.json()["type"] == "urn:ietf:params:acme:error:badNonce"
            seen = first.post(made.headers["Location"])
            assert seen.status_code == 200, seen.text
            assert seen.json()["identifiers"] == [{"type": "dns", "value": f"w{i}.svc.test"}]
    finally:
        for c in (first, *others):
            c.close()


def test_fail_a_dead_worker_stops_the_server(tmp_path: Path) -> None:
    data = tmp_path / "ca"
    http_port, https_port = free_ports(2)
    run("init", "--data", str(data), "--http", f"127.0.0.1:{http_port}",
        "--https", f"127.0.0.1:{https_port}", check=True)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CERTWRIGHT, "serve", "--data", str(data), "--workers", "3"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while len(_workers_of(data)) < 3:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        victim = next(p for p in _workers_of(data) if p != proc.pid)
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text
    assert f"worker process {victim} exited (signal 9); stopping the server" in text, text
    assert "Traceback" not in text, text
    deadline = time.monotonic() + 10
    while _workers_of(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _workers_of(data) == [], "the other workers outlived the server"


def test_fail_workers_zero_is_refused(tmp_path: Path) -> None:
    proc = run("serve", "--data", str(tmp_path / "none"), "--workers", "0")
    assert proc.returncode == 2
    assert "--workers" in proc.stderr and "Traceback" not in proc.stderr
