"""Two server processes on one PostgreSQL database behave as one ACME server: a nonce
from either is good exactly once at either, and accounts and orders are shared."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acme_client import Client
from tests.cli import CERTWRIGHT, run
from tests.conftest import lint_and_verify
from tests.served import free_ports

pytestmark = pytest.mark.postgres


def _start(data: Path, http: int, https: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        proc = subprocess.Popen([CERTWRIGHT, "serve", "--data", str(data),
                                 "--http", f"127.0.0.1:{http}",
                                 "--https", f"127.0.0.1:{https}"], stdout=f, stderr=f)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{http}/health", timeout=1,
                         trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"replica did not start: {log.read_text()}")


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[tuple[Path, list[int]]]:
    data = tmp_path / "ca"
    ports = free_ports(4)
    run("init", "--data", str(data), "--store-url", pg_url,
        "--http", f"127.0.0.1:{ports[0]}", "--https", f"127.0.0.1:{ports[1]}", check=True)
    procs = [_start(data, ports[0], ports[1], tmp_path / "a.log")]
    try:
        procs.append(_start(data, ports[2], ports[3], tmp_path / "b.log"))
        yield data, [ports[1], ports[3]]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=20) for p in procs]
    assert codes == [0] * len(procs), codes
    for name in ("a.log", "b.log"):
        text = (tmp_path / name).read_text()
        assert "Traceback" not in text, text
    lint_and_verify(data)


def test_ok_nonce_once_across_replicas(replicas: tuple[Path, list[int]]) -> None:
    data, (a, b) = replicas
    root = str(data / "root.pem")
    ca = Client(f"https://localhost:{a}/acme/directory", root)
    cb = Client(f"https://localhost:{b}/acme/directory", root, key=ca.key)
    try:
        reg = ca.register(contact=["mailto:ops@example.test"])
        assert reg.status_code == 201, reg.text
        # The same key at the other replica finds the same account.
        r = cb.register()
        assert r.status_code == 200
        assert r.headers["Location"].rsplit("/", 1)[1] == ca.kid.rsplit("/", 1)[1]  # type: ignore[union-attr]

        nonce = ca.nonce()  # handed out by replica A
        first = cb.post(cb.directory["newOrder"],
                        {"identifiers": [{"type": "dns", "value": "x.svc.test"}]}, nonce=nonce)
        assert first.status_code == 201, first.text
        # ...redeemed at B; at A, and again at B, it is spent.
        for client in (ca, cb):
            again = client.post(client.directory["newOrder"],
                                {"identifiers": [{"type": "dns", "value": "y.svc.test"}]},
                                nonce=nonce)
            assert again.status_code == 400, again.text
            assert again.json()["type"] == "urn:ietf:params:acme:error:badNonce"
            assert again.headers["Replay-Nonce"]
        # The order made at B is visible at A.
        order_path = first.headers["Location"].split("/acme/", 1)[1]
        seen = ca.post(f"https://localhost:{a}/acme/{order_path}")
        assert seen.status_code == 200, seen.text
        assert seen.json()["identifiers"] == [{"type": "dns", "value": "x.svc.test"}]
    finally:
        ca.close()
        cb.close()
