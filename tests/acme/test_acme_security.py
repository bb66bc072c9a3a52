"""ACME under attack, against a real ``certwright serve``: races on one nonce and one
order (the issue's acceptance numbers), and validation that must not become an SSRF tool
(network allow-list, redirect rules, size caps), plus dns-01, tls-alpn-01 and CAA
failures.

The http-01 responder (``tests/acme/acme_world.py``) records every request it gets, so a test
can assert that the validator never connected. Names resolve at pebble-challtestsrv to
127.0.0.1 unless a test says otherwise; the default ``tls-server`` profile does not allow
loopback, the ``lab`` profile does, the ``narrow`` one allows 127.0.0.2 only.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.acme.acme_world import (
    CAA,
    CAA_IDENTITY,
    LAB,
    NARROW,
    URN,
    World,
    acme_world,
    answer,
    assert_problem,
    authorizations,
    challenge_of,
    csr_field,
    get,
    new_order,
    ready_order,
    token_path,
    wait,
)
from tests.acme_client import Client
from tests.helpers import csr

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with acme_world(tmp_path_factory.mktemp("acme-security")) as w:
        yield w


# -- races (issue 3: "100 concurrent redemptions of one nonce give exactly one success;
#    50 concurrent finalize calls on one order give exactly one certificate") ------------


def race(world: World, n: int, prepare: Callable[[httpx.Client], tuple[str, bytes]]
         ) -> list[httpx.Response]:
    """``n`` threads, each on its own open connection, send their prepared request at
    the same moment."""
    context = ssl.create_default_context(cafile=world.served.root_pem)
    barrier = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        with httpx.Client(verify=context, trust_env=False, timeout=60) as http:
            try:
                # Open the connection before the race (/health writes nothing).
                assert http.get(f"{world.served.https}/health").status_code == 200
                url, body = prepare(http)
            except BaseException:
                barrier.abort()  # the others fail at once instead of waiting
                raise
            barrier.wait(timeout=60)
            return http.post(url, content=body,
                             headers={"Content-Type": "application/jose+json"})

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    # Report what broke the barrier, not the barrier breaking.
    errors.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
    if errors:
        raise AssertionError(f"{len(errors)} of {n} requests failed") from errors[0]
    return [f.result() for f in futures]


def test_one_nonce_redeemed_once_by_100_concurrent_requests(world: World) -> None:
    c = world.client()
    assert c.kid is not None
    body = json.dumps(c.jws(c.kid, None, nonce=c.nonce())).encode()

    def prepare(http: httpx.Client) -> tuple[str, bytes]:
        return c.kid or "", body

    results = race(world, 100, prepare)
    ok = [r for r in results if r.status_code == 200]
    assert len(ok) == 1, sorted(r.status_code for r in results)
    assert ok[0].json()["status"] == "valid"
    refused = [r for r in results if r is not ok[0]]
    for r in refused:
        assert_problem(r, "badNonce", 400)
    assert len({r.headers["Replay-Nonce"] for r in results}) == 100


def test_one_order_finalized_once_by_50_concurrent_requests(world: World) -> None:
    c = world.client()
    url, order = ready_order(world, c, "race.lab.test")
    request = csr_field(csr(["race.lab.test"]))

    def prepare(http: httpx.Client) -> tuple[str, bytes]:
        nonce = http.head(c.directory["newNonce"]).headers["Replay-Nonce"]
        return order["finalize"], json.dumps(c.jws(order["finalize"], request,
                                                   nonce=nonce)).encode()

    results = race(world, 50, prepare)
    assert all(r.status_code in (200, 403) for r in results), [r.text for r in results]
    for r in results:
        if r.status_code == 403:
            assert_problem(r, "orderNotReady", 403)
    answered = [r.json() for r in results if r.status_code == 200]
    assert answered, "no finalize call succeeded"
    done = wait(c, url)
    assert done["status"] == "valid"
    # Any call that did not get orderNotReady saw this same order, never a second one.
    for doc in answered:
        assert doc["status"] in ("processing", "valid")
        assert doc.get("certificate", done["certificate"]) == done["certificate"]
    stored = world.stored_for(c)
    assert len(stored) == 1, stored
    assert done["certificate"].endswith("/" + stored[0].serial)


# -- http-01: allowed networks, redirects, caps --------------------------------------------


Setup = Callable[[World, str, str, str], None]  # (world, name, challenge path, key auth)


def http01(world: World, c: Client, name: str, setup: Setup) -> tuple[dict[str, Any], str]:
    """Order ``name``, let ``setup`` prepare the responder, ask for http-01 validation;
    the challenge as decided, and the token."""
    _, order = new_order(c, name)
    ((authz_url, authz),) = authorizations(c, order)
    chal = challenge_of(authz, "http-01")
    setup(world, name, token_path(chal), c.key_authorization(chal["token"]))
    return answer(c, authz_url, chal), chal["token"]


def assert_failed(chal: dict[str, Any], type_: str, *fragments: str) -> None:
    assert chal["status"] == "invalid", chal
    err = chal["error"]
    assert err["type"] == URN + type_, err
    for f in fragments:
        assert f in err["detail"], (f, err)
    for word in ("Traceback", "Exception", 'File "'):
        assert word not in err["detail"]


def _serve(world: World, name: str, path: str, ka: str) -> None:
    world.web.serve(path, ka)


def test_fail_loopback_is_not_in_the_default_networks(world: World) -> None:
    c = world.client(profile=None)  # tls-server: private networks, not loopback
    for name in ("ssrf.test", "127.0.0.1"):
        chal, token = http01(world, c, name, _serve)
        assert_failed(chal, "connection", "127.0.0.1", "outside the networks")
        assert world.web.requests(token) == [], "the validator connected"
    # tls-alpn-01 is held to the same networks: challtestsrv would answer correctly.
    _, order = new_order(c, "ssrf-alpn.test")
    ((authz_url, authz),) = authorizations(c, order)
    chal = challenge_of(authz, "tls-alpn-01")
    world.chall.add_tlsalpn01("ssrf-alpn.test", c.key_authorization(chal["token"]))
    assert_failed(answer(c, authz_url, chal), "connection", "outside the networks")


def _front(world: World, name: str) -> None:
    world.chall.add_a(name, ["127.0.0.2"])


def test_narrow_networks_hold_across_redirects(world: World) -> None:
    c = world.client(NARROW)  # may connect to 127.0.0.2 only

    def direct(w: World, name: str, path: str, ka: str) -> None:
        _front(w, name)
        w.web.serve(path, ka)

    chal, token = http01(world, c, "front1.lab.test", direct)
    assert chal["status"] == "valid", chal
    assert {s.address for s in world.web.requests(token)} == {"127.0.0.2"}

    # A name with an address inside the networks and one outside: only the inside one.
    def mixed(w: World, name: str, path: str, ka: str) -> None:
        w.chall.add_a(name, ["127.0.0.1", "127.0.0.2"])
        w.web.serve(path, ka)

    chal, token = http01(world, c, "mixed.lab.test", mixed)
    assert chal["status"] == "valid", chal
    assert {s.address for s in world.web.requests(token)} == {"127.0.0.2"}

    for target in ("http://back.lab.test:{port}/back/{token}",  # resolves to 127.0.0.1
                   "http://127.0.0.1:{port}/back/{token}"):
        def bounce(w: World, name: str, path: str, ka: str, target: str = target) -> None:
            _front(w, name)
            token = path.rsplit("/", 1)[1]
            w.web.redirect(path, target.format(port=w.web.port, token=token))
            w.web.serve(f"/back/{token}", ka)

        chal, token = http01(world, c, f"front-{len(target)}.lab.test", bounce)
        assert_failed(chal, "connection", "127.0.0.1", "outside the networks")
        seen = world.web.requests(token)
        assert [s.address for s in seen] == ["127.0.0.2"], seen


def chain(hops: int, *, relative: bool = False) -> Setup:
    """``hops`` redirects on the http-01 port, then the key authorization."""
    def setup(w: World, name: str, path: str, ka: str) -> None:
        token = path.rsplit("/", 1)[1]
        steps = [path] + [f"/hop/{token}/{i}" for i in range(1, hops + 1)]
        for here, there in itertools.pairwise(steps):
            w.web.redirect(here, there if relative else f"http://{name}:{w.web.port}{there}")
        w.web.serve(steps[-1], ka)
    return setup


def redirect_to(location: str) -> Setup:
    def setup(w: World, name: str, path: str, ka: str) -> None:
        token = path.rsplit("/", 1)[1]
        w.web.redirect(path, location.format(name=name, port=w.web.port, token=token))
        w.web.serve(f"/elsewhere/{token}", ka)
    return setup


def _oversized(w: World, name: str, path: str, ka: str) -> None:
    w.web.serve(path, ka + " " * 9000)  # correct once stripped: only the cap refuses it


def _trickle(w: World, name: str, path: str, ka: str) -> None:
    # 0.5 s between bytes stays under the read timeout (3 s here); the whole answer
    # would take 40 s, far over the validation's overall limit (twice the timeout).
    w.web.serve(path, ka, trickle=0.5)


def _wrong(w: World, name: str, path: str, ka: str) -> None:
    w.web.serve(path, ka[:-1] + ("A" if ka[-1] != "A" else "B"))


def _not_found(w: World, name: str, path: str, ka: str) -> None:
    pass


def _server_error(w: World, name: str, path: str, ka: str) -> None:
    w.web.serve(path, ka, status=500)


# name -> (setup, None for valid or the problem type, detail fragment, requests expected)
HTTP01_CASES: dict[str, tuple[Setup, str | None, str, int | None]] = {
    "ok/direct": (_serve, None, "", 1),
    "ok/10-redirects": (chain(10), None, "", 11),
    "ok/relative-redirects": (chain(3, relative=True), None, "", 4),
    "fail/11-redirects": (chain(11), "connection", "more than 10 redirects", 11),
    "fail/redirect-to-another-port": (
        redirect_to("http://{name}:1/elsewhere/{token}"), "connection", "port 1", 1),
    "fail/redirect-to-port-80": (
        redirect_to("http://{name}/elsewhere/{token}"), "connection", "port 80", 1),
    "fail/redirect-to-https-on-the-http-01-port": (
        redirect_to("https://{name}:{port}/elsewhere/{token}"), "connection", "port", 1),
    "fail/redirect-to-ftp": (
        redirect_to("ftp://{name}:{port}/elsewhere/{token}"), "connection", "'ftp'", 1),
    "fail/redirect-to-file": (redirect_to("file:///etc/passwd"), "connection", "'file'", 1),
    # Locations httpx reads but urllib refuses: the validator must answer, not crash.
    "fail/redirect-to-port-99999": (
        redirect_to("http://{name}:99999/elsewhere/{token}"), "connection", "invalid", 1),
    "fail/redirect-to-port-+80": (
        redirect_to("http://{name}:+80/elsewhere/{token}"), "connection", "invalid", 1),
    "fail/body-over-8KiB": (_oversized, "unauthorized", "8192 bytes", 1),
    "fail/trickled-too-slowly": (_trickle, "connection", "timeout", 1),
    "fail/wrong-key-authorization": (_wrong, "incorrectResponse", "", 1),
    "fail/404": (_not_found, "unauthorized", "HTTP 404", 1),
    "fail/500": (_server_error, "unauthorized", "HTTP 500", 1),
}


@pytest.mark.parametrize("case", list(HTTP01_CASES))
def test_http01(world: World, case: str) -> None:
    setup, problem, fragment, requests = HTTP01_CASES[case]
    c = world.client(LAB)
    name = re.sub(r"[^a-z0-9-]", "-", case.split("/", 1)[1].lower())[:40].strip("-")
    chal, token = http01(world, c, name + ".lab.test", setup)
    if problem is None:
        assert chal["status"] == "valid", chal
        assert chal["validated"]
    else:
        assert_failed(chal, problem, fragment)
    if requests is not None:
        assert len(world.web.requests(token)) == requests, world.web.requests(token)


# -- dns-01 and tls-alpn-01 ----------------------------------------------------------------


def test_dns01(world: World) -> None:
    from certwright.acme.validation import dns01_value

    c = world.client()
    _, order = new_order(c, "txt-wrong.lab.test", "txt-none.lab.test", "txt-right.lab.test")
    for authz_url, authz in authorizations(c, order):
        name = authz["identifier"]["value"]
        chal = challenge_of(authz, "dns-01")
        ka = c.key_authorization(chal["token"])
        if name.startswith("txt-wrong"):
            world.chall.set_txt(f"_acme-challenge.{name}", dns01_value(ka + "x"))
            assert_failed(answer(c, authz_url, chal), "incorrectResponse")
        elif name.startswith("txt-none"):
            assert_failed(answer(c, authz_url, chal), "dns", "_acme-challenge." + name)
        else:
            world.chall.set_txt(f"_acme-challenge.{name}", dns01_value(ka))
            assert answer(c, authz_url, chal)["status"] == "valid"


def test_tlsalpn01(world: World) -> None:
    c = world.client()
    _, order = new_order(c, "alpn-right.lab.test", "alpn-wrong.lab.test")
    for authz_url, authz in authorizations(c, order):
        name = authz["identifier"]["value"]
        chal = challenge_of(authz, "tls-alpn-01")
        ka = c.key_authorization(chal["token"])
        if name.startswith("alpn-right"):
            world.chall.add_tlsalpn01(name, ka)
            assert answer(c, authz_url, chal)["status"] == "valid"
        else:
            # A certificate for the name whose acmeIdentifier is another key authorization.
            world.chall.add_tlsalpn01(name, ka + "x")
            assert_failed(answer(c, authz_url, chal), "unauthorized", "acmeIdentifier")


# -- CAA (RFC 8659) ------------------------------------------------------------------------


def test_caa(world: World) -> None:
    from certwright.acme.validation import dns01_value

    c = world.client(CAA)
    assert c.directory["meta"]["caaIdentities"] == [CAA_IDENTITY]
    cases = {
        "caa-other.lab.test": ([{"tag": "issue", "value": "other-ca.example"}], "caa"),
        "caa-ours.lab.test": ([{"tag": "issue", "value": f"{CAA_IDENTITY}; account=1"}],
                              None),
        "caa-none.lab.test": ([], None),
        "caa-iodef-only.lab.test": ([{"tag": "iodef", "value": "mailto:x@lab.test"}], None),
        "caa-empty.lab.test": ([{"tag": "issue", "value": ";"}], "caa"),
    }
    for name, (policies, _) in cases.items():
        if policies:
            world.chall.add_caa(name, policies)
    _, order = new_order(c, *cases)
    for authz_url, authz in authorizations(c, order):
        name = authz["identifier"]["value"]
        chal = challenge_of(authz, "dns-01")
        world.chall.set_txt(f"_acme-challenge.{name}",
                            dns01_value(c.key_authorization(chal["token"])))
        done = answer(c, authz_url, chal)
        problem = cases[name][1]
        if problem is None:
            assert done["status"] == "valid", (name, done)
        else:
            assert_failed(done, problem, name)
    # A wildcard is held to issuewild when there is one.
    world.chall.add_caa("caa-wild.lab.test", [
        {"tag": "issue", "value": CAA_IDENTITY}, {"tag": "issuewild", "value": "other.example"}])
    _, order = new_order(c, "*.caa-wild.lab.test")
    ((authz_url, authz),) = authorizations(c, order)
    chal = challenge_of(authz, "dns-01")
    world.chall.set_txt("_acme-challenge.caa-wild.lab.test",
                        dns01_value(c.key_authorization(chal["token"])))
    assert_failed(answer(c, authz_url, chal), "caa")
    assert get(c, authz_url)["status"] == "invalid"
