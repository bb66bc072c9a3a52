"""``acme.max_concurrent_validations``: no more validations connect out at once than the
setting allows; the others wait with their challenges "processing" and go on when a
place frees up. A real server validating against an http-01 responder that holds every
request until the test lets it go, and counts how many it holds at once."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.acme.acme_world import answer_later, authorizations, challenge_of, new_order, wait
from tests.acme_client import Client
from tests.challtestsrv import challtestsrv
from tests.served import free_ports, serving

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl")

CAP = 2
NAMES = [f"v{i}.cap.test" for i in range(5)]


class Holding:
    """An http-01 responder that answers each request only once ``release`` is set."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.release = threading.Event()
        self.in_flight = 0
        self.most = 0
        self._lock = threading.Lock()
        (self.port,) = free_ports(1)
        holding = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with holding._lock:
                    holding.in_flight += 1
                    holding.most = max(holding.most, holding.in_flight)
                try:
                    holding.release.wait(timeout=20)
                    body = holding.answers.get(self.path, "").encode()
                    self.send_response(200 if body else 404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with holding._lock:
                        holding.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Client, Holding]]:
    web = Holding()
    try:
        with challtestsrv(tmp_path, http01=False, tlsalpn01=False) as chall:

            def configure(data: Path) -> None:
                path = data / "certwright.yaml"
                doc = yaml.safe_load(path.read_text())
                doc["acme"].update(dns_resolver=chall.resolver, http01_port=web.port,
                                   timeout="15s", max_concurrent_validations=CAP)
                doc["profiles"]["tls-server"]["acme"]["validation_networks"].append(
                    "127.0.0.0/8")
                path.write_text(yaml.safe_dump(doc, sort_keys=False))

            with serving(tmp_path, configure) as served:
                client = Client(f"{served.https}/acme/directory", str(served.root_pem))
                try:
                    assert client.register().status_code == 201
                    yield client, web
                finally:
                    client.close()
    finally:
        web.close()


def test_ok_validations_wait_for_a_place(world: tuple[Client, Holding]) -> None:
    client, web = world
    _, order = new_order(client, *NAMES)
    pending = []
    for authz_url, authz in authorizations(client, order):
        chal = challenge_of(authz, "http-01")
        web.answers[f"/.well-known/acme-challenge/{chal['token']}"] = \
            client.key_authorization(chal["token"])
        answer_later(client, chal)
        pending.append((authz_url, chal))
    deadline = time.monotonic() + 10
    while web.in_flight < CAP:
        assert time.monotonic() < deadline, f"only {web.in_flight} validations arrived"
        time.sleep(0.02)
    time.sleep(0.5)  # room for any validation beyond the cap to arrive: none may
    assert (web.in_flight, web.most) == (CAP, CAP)
    statuses = [challenge_of(wait(client, url, busy=()), "http-01")["status"]
                for url, _ in pending]
    assert statuses == ["processing"] * len(NAMES), statuses
    web.release.set()
    for authz_url, _ in pending:
        assert wait(client, authz_url, busy=("pending",))["status"] == "valid"
    assert web.most == CAP
