"""One ``certwright serve``, one pebble-challtestsrv and one recording http-01 responder,
for the ACME protocol and security tests (one set per test module).

Validation is real and on loopback: the server resolves names at challtestsrv (which
answers 127.0.0.1 for every name unless told otherwise), fetches http-01 from the
responder here (so a test sees every request the validator made, or that it made none),
and makes the tls-alpn-01 handshake with challtestsrv.

Profiles beside the untouched default ``tls-server`` (whose validation networks leave
out loopback, as a fresh ``certwright init`` writes them):

- ``lab``: loopback allowed, wildcards allowed, ARI window at 1/2..3/4 of the lifetime;
- ``narrow``: validation may connect to 127.0.0.2 only;
- ``caa``: ``lab`` with CAA checking, identity ``certwright.test``;
- ``limited``: ``lab`` with 2 orders per account and 3 per profile per hour;
- ``few-authz``: ``lab`` with 2 pending authorizations per account.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import functools
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.ca import datadir
from certwright.store.repo import CertificateRecord, Store
from tests.acme_client import Client, Key
from tests.challtestsrv import ChallTestSrv, challtestsrv
from tests.served import Served, free_ports, serving

URN = "urn:ietf:params:acme:error:"
CAA_IDENTITY = "certwright.test"
LAB = "lab"
NARROW = "narrow"
CAA = "caa"
LIMITED = "limited"
FEW_AUTHZ = "few-authz"
# Words that only appear in a problem document if internal detail leaked into it.
LEAKS = ("Traceback", 'File "', "sqlalchemy", "sqlite", "Exception", "/work/", "site-packages",
         "certwright.", "line ")


# -- the http-01 responder -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Seen:
    address: str  # the local address the request came in on
    path: str
    host: str


class Responder:
    """Answers configured paths on 127.0.0.1 and 127.0.0.2 (one port) and records every
    request. A route is (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[Seen] = []
        self.trickle: dict[str, float] = {}  # path -> pause between the bytes of its body
        self._lock = threading.Lock()
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self.port = 0

    def start(self) -> None:
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with responder._lock:
                    responder.seen.append(Seen(str(self.connection.getsockname()[0]),
                                               self.path, self.headers.get("Host", "")))
                    status, headers, body = responder.routes.get(
                        self.path, (404, {}, b"not here\n"))
                    pause = responder.trickle.get(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if pause is None:
                    self.wfile.write(body)
                    return
                try:  # a byte at a time: each read is quick, the whole is not
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:
                    self.close_connection = True  # the validator gave up, as it should

            def log_message(self, format: str, *args: Any) -> None:
                pass

        for _ in range(10):
            (port,) = free_ports(1)
            try:
                servers = [http.server.ThreadingHTTPServer((a, port), Handler)
                           for a in ("127.0.0.1", "127.0.0.2")]
            except OSError:
                continue
            self.port = port
            self._servers = servers
            break
        else:
            raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")
        for s in self._servers:
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def serve(self, path: str, body: bytes | str, status: int = 200,
              trickle: float | None = None) -> None:
        with self._lock:
            if trickle is not None:
                self.trickle[path] = trickle
            self.routes[path] = (status, {"Content-Type": "text/plain"},
                                 body.encode() if isinstance(body, str) else body)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        with self._lock:
            self.routes[path] = (status, {"Location": location}, b"")

    def requests(self, fragment: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if fragment in s.path]


# -- the world -----------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    served: Served
    chall: ChallTestSrv
    web: Responder
    clients: list[Client] = dataclasses.field(default_factory=list)

    def directory(self, profile: str | None = LAB) -> str:
        if profile is None:
            return f"{self.served.https}/acme/directory"
        return f"{self.served.https}/acme/{profile}/directory"

    def client(self, profile: str | None = LAB, key: Key | None = None,
               register: bool = True, **payload: Any) -> Client:
        c = Client(self.directory(profile), str(self.served.root_pem), key=key)
        self.clients.append(c)
        if register:
            r = c.register(**payload)
            assert r.status_code == 201, r.text
        return c

    def https(self) -> httpx.Client:
        """A plain HTTPS client that trusts the CA's root (close it)."""
        return httpx.Client(verify=ssl.create_default_context(cafile=self.served.root_pem),
                            trust_env=False, timeout=30)

    def stored(self) -> list[CertificateRecord]:
        """Every certificate in the CA's store, read directly (the server keeps running)."""
        _, config, _ = datadir.load(self.served.data)
        store = Store.open(config.store.url, self.served.data)
        try:
            return store.certificates(limit=1_000_000)
        finally:
            store.close()

    def stored_for(self, client: Client) -> list[CertificateRecord]:
        return [c for c in self.stored() if c.requester == f"acme-account:{account_id(client)}"]


def _configure(data: Path, *, resolver: str, http01: int, tlsalpn01: int) -> None:
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["acme"].update(dns_resolver=resolver, http01_port=http01, tlsalpn01_port=tlsalpn01,
                       timeout="3s")
    profiles = doc["profiles"]
    lab = copy.deepcopy(profiles["tls-server"])
    lab["protocols"] = ["acme"]
    lab["names"]["wildcards"] = True
    lab["acme"]["validation_networks"].append("127.0.0.0/8")
    lab["acme"].update(renewal_window_start=0.5, renewal_window_end=0.75)
    narrow = copy.deepcopy(lab)
    narrow["acme"]["validation_networks"] = ["127.0.0.2/32"]
    caa = copy.deepcopy(lab)
    caa["acme"].update(check_caa=True, caa_identities=[CAA_IDENTITY])
    limited = copy.deepcopy(lab)
    limited["acme"]["rate_limits"] = {"window": "1h", "orders_per_account": 2,
                                      "orders_per_profile": 3}
    few = copy.deepcopy(lab)
    few["acme"]["rate_limits"] = {"pending_authorizations_per_account": 2}
    profiles.update({LAB: lab, NARROW: narrow, CAA: caa, LIMITED: limited, FEW_AUTHZ: few})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@contextlib.contextmanager
def acme_world(base: Path) -> Iterator[World]:
    web = Responder()
    web.start()
    try:
        with challtestsrv(base, http01=False) as chall:
            configure = functools.partial(_configure, resolver=chall.resolver,
                                          http01=web.port, tlsalpn01=chall.tlsalpn01_port)
            with serving(base, configure) as served:
                world = World(served, chall, web)
                try:
                    yield world
                finally:
                    for c in world.clients:
                        c.close()
    finally:
        web.stop()


# -- protocol helpers ----------------------------------------------------------------------


def account_id(client: Client) -> str:
    assert client.kid is not None
    return client.kid.rsplit("/", 1)[1]


def assert_problem(r: httpx.Response, type_: str, status: int | None = None
                   ) -> dict[str, Any]:
    """An RFC 7807 problem document of the ACME ``type_``, with a fresh nonce and no
    internal detail in it."""
    assert r.headers.get("content-type") == "application/problem+json", (r.status_code,
                                                                         r.text)
    doc = r.json()
    assert doc["type"] == URN + type_, (r.status_code, doc)
    if status is not None:
        assert r.status_code == status, (r.status_code, doc)
    assert doc["status"] == r.status_code, doc
    assert isinstance(doc["detail"], str) and doc["detail"], doc
    for word in LEAKS:
        assert word not in r.text, (word, r.text)
    assert r.headers.get("Replay-Nonce"), r.headers
    return dict(doc)


def get(client: Client, url: str) -> dict[str, Any]:
    """POST-as-GET a JSON resource."""
    r = client.post(url)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def new_order(client: Client, *names: str) -> tuple[str, dict[str, Any]]:
    r = client.new_order(*names)
    assert r.status_code == 201, r.text
    return r.headers["Location"], r.json()


def authorizations(client: Client, order: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(url, get(client, url)) for url in order["authorizations"]]


def challenge_of(authz: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in authz["challenges"] if c["type"] == type_]
    assert found, (type_, authz)
    return dict(found[0])


def token_path(chal: dict[str, Any]) -> str:
    return f"/.well-known/acme-challenge/{chal['token']}"


def wait(client: Client, url: str, *, busy: tuple[str, ...] = ("pending", "processing"),
         timeout: float = 20) -> dict[str, Any]:
    """POST-as-GET ``url`` until its status leaves ``busy``."""
    deadline = time.monotonic() + timeout
    while True:
        doc = get(client, url)
        if doc["status"] not in busy:
            return doc
        assert time.monotonic() < deadline, f"{url} still {doc['status']}: {doc}"
        time.sleep(0.05)


def answer_later(client: Client, chal: dict[str, Any]) -> None:
    """Ask for validation of ``chal`` without waiting for the result."""
    r = client.post(chal["url"], {})
    assert r.status_code == 200, r.text


def answer(client: Client, authz_url: str, chal: dict[str, Any]) -> dict[str, Any]:
    """Ask for validation of ``chal`` and wait for its authorization to be decided;
    return the challenge as the server then shows it."""
    r = client.post(chal["url"], {})
    assert r.status_code == 200, r.text
    assert r.headers["Link"].startswith(f'<{authz_url}>;rel="up"'), r.headers["Link"]
    authz = wait(client, authz_url, busy=("pending",))
    (done,) = [c for c in authz["challenges"] if c["url"] == chal["url"]]
    return dict(done)


def dns01(world: World, client: Client, authz_url: str, authz: dict[str, Any]) -> None:
    from certwright.acme.validation import dns01_value

    chal = challenge_of(authz, "dns-01")
    name = authz["identifier"]["value"]
    world.chall.set_txt(f"_acme-challenge.{name}",
                        dns01_value(client.key_authorization(chal["token"])))
    done = answer(client, authz_url, chal)
    assert done["status"] == "valid", done


def ready_order(world: World, client: Client, *names: str) -> tuple[str, dict[str, Any]]:
    """A new order for ``names``, every pending authorization proven with dns-01."""
    url, order = new_order(client, *names)
    for authz_url, authz in authorizations(client, order):
        if authz["status"] == "pending":
            dns01(world, client, authz_url, authz)
    order = wait(client, url, busy=("pending",))
    assert order["status"] == "ready", order
    return url, order


def csr_field(csr: x509.CertificateSigningRequest) -> dict[str, str]:
    der = csr.public_bytes(serialization.Encoding.DER)
    return {"csr": base64.urlsafe_b64encode(der).rstrip(b"=").decode()}


def finalize(client: Client, order: dict[str, Any], csr: x509.CertificateSigningRequest
             ) -> httpx.Response:
    return client.post(order["finalize"], csr_field(csr))


@dataclasses.dataclass(frozen=True)
class Got:
    order_url: str
    order: dict[str, Any]
    certificate: x509.Certificate
    key: Any  # the certificate's private key (cryptography)


def issue(world: World, client: Client, *names: str,
          make_csr: Callable[..., x509.CertificateSigningRequest] | None = None) -> Got:
    """Order, prove (dns-01), finalize and download a certificate for ``names``."""
    from tests.helpers import csr, key

    url, order = ready_order(world, client, *names)
    private = key()
    r = finalize(client, order, (make_csr or csr)(list(names), private_key=private))
    assert r.status_code == 200, r.text
    order = wait(client, url)
    assert order["status"] == "valid", order
    cert = client.post(order["certificate"])
    assert cert.status_code == 200, cert.text
    leaf = x509.load_pem_x509_certificates(cert.content)[0]
    return Got(url, order, leaf, private)
