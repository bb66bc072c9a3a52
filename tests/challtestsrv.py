"""pebble-challtestsrv (Debian package ``pebble``): the DNS server and challenge responder
Let's Encrypt uses to test Boulder, started on free loopback ports and driven through
its management API."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .conftest import require_peer
from .served import free_ports


@dataclasses.dataclass
class ChallTestSrv:
    dns_port: int
    http01_port: int
    tlsalpn01_port: int
    management_port: int

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def call(self, path: str, /, **body: Any) -> None:
        r = httpx.post(f"http://127.0.0.1:{self.management_port}{path}", json=body,
                       timeout=10, trust_env=False)
        assert r.status_code == 200, (path, r.status_code, r.text)

    def add_http01(self, token: str, content: str) -> None:
        self.call("/add-http01", token=token, content=content)

    def set_txt(self, host: str, value: str) -> None:
        self.call("/set-txt", host=host.rstrip(".") + ".", value=value)

    def clear_txt(self, host: str) -> None:
        self.call("/clear-txt", host=host.rstrip(".") + ".")

    def add_tlsalpn01(self, host: str, content: str) -> None:
        self.call("/add-tlsalpn01", host=host, content=content)

    def add_a(self, host: str, addresses: list[str]) -> None:
        self.call("/add-a", host=host.rstrip(".") + ".", addresses=addresses)

    def add_caa(self, host: str, policies: list[dict[str, str]]) -> None:
        self.call("/add-caa", host=host.rstrip(".") + ".", policies=policies)

    def add_redirect(self, path: str, target: str) -> None:
        self.call("/add-redirect", path=path, targetURL=target)


@contextlib.contextmanager
def challtestsrv(log_dir: Path, *, http01: bool = True, tlsalpn01: bool = True
                 ) -> Iterator[ChallTestSrv]:
    prog = require_peer("pebble-challtestsrv", "pebble")
    dns_port, http_port, alpn_port, mgmt_port, https_port = free_ports(5)
    srv = ChallTestSrv(dns_port, http_port, alpn_port, mgmt_port)
    log = (log_dir / "challtestsrv.log").open("wb")
    proc = subprocess.Popen(
        [prog, "-dns01", f"127.0.0.1:{dns_port}",
         "-http01", f"127.0.0.1:{http_port}" if http01 else "",
         "-tlsalpn01", f"127.0.0.1:{alpn_port}" if tlsalpn01 else "",
         "-https01", f"127.0.0.1:{https_port}",
         "-management", f"127.0.0.1:{mgmt_port}",
         "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", mgmt_port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("pebble-challtestsrv did not start: "
                                         + (log_dir / "challtestsrv.log").read_text()) from None
                time.sleep(0.05)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
