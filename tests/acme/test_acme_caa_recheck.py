"""CAA is checked again at finalize when a name's validation is older than 8 hours
(CA/B Forum BR 3.2.2.8), since authorizations are reused for 30 days.

In process with a fake clock (the 8 hours pass by hand), the ACME front-end served by
uvicorn on a loopback port in a thread, CAA records from a real pebble-challtestsrv DNS
server. The
authorizations are made valid through the state (validation itself is tested against
real responders elsewhere); what is tested here is finalize's second look at CAA.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from starlette.applications import Starlette

from certwright.acme import config as acmeconfig
from certwright.acme.app import acme_storage
from certwright.acme.ports import AcmeStorage
from certwright.acme.server import AcmeServer
from certwright.acme.validation import Validator, settings_from
from certwright.ca import datadir
from certwright.clock import FakeClock
from tests.acme_client import Client, b64
from tests.challtestsrv import ChallTestSrv, challtestsrv
from tests.served import free_ports

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl")

PROFILE = "caa-lab"
IDENTITY = "certwright.test"


class Local(Client):
    """The tests' raw JWS client, plain HTTP to the in-process server."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(timeout=30, trust_env=False)
        self.directory = self.http.get(f"{base}/acme/{PROFILE}/directory").json()
        self.key = ECKey.generate_key("P-256")
        self.kid = None


@contextlib.contextmanager
def in_thread(app: Starlette) -> Iterator[str]:
    """uvicorn serving ``app`` on a loopback port, in a thread of this process."""
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def world(ca_dir: Path, clock: FakeClock, tmp_path: Path
          ) -> Iterator[tuple[Local, AcmeStorage, FakeClock, ChallTestSrv]]:
    with challtestsrv(tmp_path) as chall:
        path = ca_dir / "certwright.yaml"
        doc = yaml.safe_load(path.read_text())
        lab = copy.deepcopy(doc["profiles"]["tls-server"])
        lab["protocols"] = ["acme"]
        lab["acme"].update(check_caa=True, caa_identities=[IDENTITY])
        doc["profiles"][PROFILE] = lab
        doc.setdefault("acme", {})["dns_resolver"] = chall.resolver
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        with datadir.opened(ca_dir, clock=clock) as ca:
            state = acme_storage(ca)
            server = AcmeServer(ca, state, Validator(settings_from(acmeconfig.settings(ca.config))))
            with in_thread(Starlette(routes=server.routes())) as base:
                client = Local(base)
                try:
                    assert client.register().status_code == 201
                    yield client, state, clock, chall
                finally:
                    client.close()


def _ready_order(client: Local, state: AcmeStorage, name: str) -> dict[str, Any]:
    """An order for ``name`` whose authorization is valid as of now."""
    r = client.new_order(name)
    assert r.status_code == 201, r.text
    order = r.json()
    authz_id = order["authorizations"][0].rsplit("/", 1)[1]
    authz = state.authorization(authz_id)
    assert authz is not None
    chal = authz.challenges[0]
    assert state.start_challenge(chal)
    state.finish_challenge(chal, None, dt.timedelta(days=30))
    order["url"] = r.headers["Location"]
    return order


def _finalize(client: Local, order: dict[str, Any], name: str) -> Any:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
           .sign(key, hashes.SHA256()))
    return client.post(order["finalize"],
                       {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})


def test_ok_fresh_validation_is_not_checked_again(world: Any) -> None:
    client, state, clock, chall = world
    order = _ready_order(client, state, "fresh.lab.test")
    # CAA that forbids us appears after validation, within the 8 hours: it is not asked.
    chall.add_caa("fresh.lab.test", [{"tag": "issue", "value": "other-ca.example"}])
    clock.advance(dt.timedelta(hours=7, minutes=59))
    r = _finalize(client, order, "fresh.lab.test")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "valid"


def test_fail_stale_validation_meets_caa_that_now_forbids(world: Any) -> None:
    client, state, clock, chall = world
    order = _ready_order(client, state, "stale.lab.test")
    chall.add_caa("stale.lab.test", [{"tag": "issue", "value": "other-ca.example"}])
    clock.advance(dt.timedelta(hours=8, minutes=1))
    r = _finalize(client, order, "stale.lab.test")
    assert r.status_code == 403, r.text
    problem = r.json()
    assert problem["type"] == "urn:ietf:params:acme:error:caa", problem
    assert problem["subproblems"][0]["identifier"] == {"type": "dns",
                                                       "value": "stale.lab.test"}
    assert "do not allow this CA" in problem["subproblems"][0]["detail"]
    # Nothing issued; the order stays ready, and once the records allow us it goes through.
    assert client.post(order["url"]).json()["status"] == "ready"
    chall.add_caa("stale.lab.test", [{"tag": "issue", "value": IDENTITY}])
    r = _finalize(client, order, "stale.lab.test")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "valid"


def test_ok_stale_validation_with_caa_that_allows(world: Any) -> None:
    client, state, clock, chall = world
    order = _ready_order(client, state, "allowed.lab.test")
    chall.add_caa("allowed.lab.test", [{"tag": "issue", "value": f"{IDENTITY}; x=1"}])
    clock.advance(dt.timedelta(days=2))
    r = _finalize(client, order, "allowed.lab.test")
    assert r.status_code == 200, r.text
