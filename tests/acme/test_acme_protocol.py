"""The ACME wire protocol (RFC 8555, 8738, 9773) against a real ``certwright serve``:
JWS rules, accounts and key rollover, orders and authorizations, finalize, certificate
download, revocation, renewal information and rate limits.

A small raw client (``tests/acme_client.py``) sends what real clients would not. Every
error must be an ``application/problem+json`` document with an ACME error URN, a fresh
``Replay-Nonce`` and no internal detail (``acme_world.assert_problem``). Validation is
real (dns-01 TXT records at pebble-challtestsrv); see ``tests/acme/acme_world.py``. Every
certificate issued here is linted and verified when the server stops.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from certwright.store.repo import CertificateRecord
from tests.acme.acme_world import (
    FEW_AUTHZ,
    LAB,
    LIMITED,
    URN,
    World,
    acme_world,
    answer,
    assert_problem,
    authorizations,
    challenge_of,
    dns01,
    finalize,
    get,
    issue,
    new_order,
    ready_order,
    token_path,
    wait,
)
from tests.acme_client import Client, Key, alg_of, b64, sign
from tests.helpers import csr, key

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with acme_world(tmp_path_factory.mktemp("acme-protocol")) as w:
        yield w


@pytest.fixture(scope="module")
def acct(world: World) -> Client:
    """One registered account on the lab profile, for tests that need any account."""
    return world.client(contact=["mailto:ops@lab.test"])


def rsa_1024() -> RSAKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # what this key is for
        return RSAKey.import_key(rsa.generate_private_key(65537, 1024))


def raw_jws(protected: dict[str, Any], payload: bytes, signature: bytes = b"") -> dict[str, str]:
    return {"protected": b64(json.dumps(protected).encode()), "payload": b64(payload),
            "signature": b64(signature)}


def protected(c: Client, target: str, **changes: Any) -> dict[str, Any]:
    """The header ``c`` would send, with ``changes`` (a value of None removes the key)."""
    p: dict[str, Any] = {"alg": alg_of(c.key), "kid": c.kid, "nonce": c.nonce(),
                         "url": target}
    p.update(changes)
    return {k: v for k, v in p.items() if v is not None}


def es256(k: Key, header: dict[str, Any], payload: bytes) -> dict[str, str]:
    """An ES256 JWS signed by hand, for headers joserfc refuses to write."""
    assert isinstance(k, ECKey) and k.private_key is not None
    body = {"protected": b64(json.dumps(header).encode()), "payload": b64(payload)}
    der = k.private_key.sign(f"{body['protected']}.{body['payload']}".encode(),
                             ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return {**body, "signature": b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}


ORDER = json.dumps({"identifiers": [{"type": "dns", "value": "jws.lab.test"}]}).encode()


# -- directory and nonces ------------------------------------------------------------------


def test_ok_directory_and_nonces(world: World) -> None:
    http = world.https()
    try:
        for profile in (None, LAB):
            r = http.get(world.directory(profile))
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            d = r.json()
            name = profile or "tls-server"
            base = f"{world.served.https}/acme/{name}"
            assert {k: v for k, v in d.items() if k != "meta"} == {
                "newNonce": f"{base}/new-nonce", "newAccount": f"{base}/new-account",
                "newOrder": f"{base}/new-order", "revokeCert": f"{base}/revoke-cert",
                "keyChange": f"{base}/key-change", "renewalInfo": f"{base}/renewal-info"}
            assert d["meta"]["externalAccountRequired"] is False
            # A plain GET needs no nonce, and getting one would cost a store write.
            assert "Replay-Nonce" not in r.headers
            # RFC 8555 7.2: HEAD answers 200, GET 204; both carry a nonce, never cached.
            head, getr = http.head(d["newNonce"]), http.get(d["newNonce"])
            assert (head.status_code, getr.status_code) == (200, 204)
            nonces = {head.headers["Replay-Nonce"], getr.headers["Replay-Nonce"]}
            assert len(nonces) == 2
            assert head.headers["Cache-Control"] == "no-store"
        # A profile that does not speak ACME, and no profile at all, have no directory.
        for missing in ("tls-client", "no-such-profile"):
            assert_problem(http.get(world.directory(missing)), "malformed", 404)
    finally:
        http.close()


# -- JWS (RFC 8555 6.2-6.5) ----------------------------------------------------------------

JwsCase = Callable[[World, Client], httpx.Response]


def _alg_none(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, raw_jws(protected(c, url, alg="none"), ORDER))


def _alg_hs256(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, sign(OctKey.generate_key(256), protected(c, url, alg="HS256"), ORDER))


def _alg_not_the_account_keys(w: World, c: Client) -> httpx.Response:
    # The account key is P-256; ES384 (with a P-384 signature) does not fit it.
    url = c.directory["newOrder"]
    return c.raw(url, sign(ECKey.generate_key("P-384"), protected(c, url, alg="ES384"), ORDER))


def _alg_not_the_jwks(w: World, c: Client) -> httpx.Response:
    url = c.directory["newAccount"]
    jwk = ECKey.generate_key("P-256").as_dict(private=False)
    p = protected(c, url, alg="ES384", kid=None, jwk=jwk)
    return c.raw(url, sign(ECKey.generate_key("P-384"), p, b"{}"))


def _rs256_with_ec_jwk(w: World, c: Client) -> httpx.Response:
    url = c.directory["newAccount"]
    p = protected(c, url, alg="RS256", kid=None, jwk=c.key.as_dict(private=False))
    return c.raw(url, sign(RSAKey.generate_key(2048), p, b"{}"))


def _jwk_and_kid(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, sign(c.key, protected(c, url, jwk=c.key.as_dict(private=False)), ORDER))


def _neither_jwk_nor_kid(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, sign(c.key, protected(c, url, kid=None), ORDER))


def _jwk_not_an_object(w: World, c: Client) -> httpx.Response:
    url = c.directory["newAccount"]
    return c.raw(url, es256(c.key, protected(c, url, kid=None, jwk="not a key"), b"{}"))


def _several_signatures(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    one = c.jws(url, json.loads(ORDER))
    return c.raw(url, {"payload": one["payload"], "signatures": [
        {"protected": one["protected"], "signature": one["signature"]}]})


def _unprotected_header(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, {**c.jws(url, json.loads(ORDER)), "header": {"kid": c.kid}})


def _url_not_the_request_url(w: World, c: Client) -> httpx.Response:
    return c.raw(c.directory["newOrder"], c.jws(c.directory["revokeCert"], json.loads(ORDER)))


def _no_url(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, sign(c.key, protected(c, url, url=None), ORDER))


def _no_nonce(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    return c.raw(url, sign(c.key, protected(c, url, nonce=None), ORDER))


def _made_up_nonce(w: World, c: Client) -> httpx.Response:
    return c.post(c.directory["newOrder"], json.loads(ORDER), nonce=b64(secrets.token_bytes(16)))


def _bad_signature(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    body = c.jws(url, json.loads(ORDER))
    body["payload"] = b64(ORDER.replace(b"jws.lab.test", b"jwz.lab.test"))
    return c.raw(url, body)


def _unknown_kid(w: World, c: Client) -> httpx.Response:
    assert c.kid is not None
    kid = c.kid.rsplit("/", 1)[0] + "/" + secrets.token_urlsafe(12)
    return c.post(c.directory["newOrder"], json.loads(ORDER), extra={"kid": kid})


def _kid_of_another_profile(w: World, c: Client) -> httpx.Response:
    other = Client(w.directory(LIMITED), str(w.served.root_pem), key=c.key)
    w.clients.append(other)
    other.kid = c.kid  # a lab account is no account at the limited directory
    return other.post(other.directory["newOrder"], json.loads(ORDER))


def _rsa_1024_account(w: World, c: Client) -> httpx.Response:
    return c.post(c.directory["newAccount"], {"termsOfServiceAgreed": True}, key=rsa_1024(),
                  use_jwk=True)


def _body_not_json(w: World, c: Client) -> httpx.Response:
    return c.raw(c.directory["newOrder"], b"{not json")


def _protected_not_json(w: World, c: Client) -> httpx.Response:
    return c.raw(c.directory["newOrder"], {"protected": b64(b"alg=ES256"), "payload": "",
                                           "signature": ""})


def _padded_base64(w: World, c: Client) -> httpx.Response:
    url = c.directory["newOrder"]
    body = c.jws(url, json.loads(ORDER))
    body["payload"] += "=" * (-len(body["payload"]) % 4 or 4)
    return c.raw(url, body)


JWS_CASES: dict[str, tuple[JwsCase, str, int]] = {
    "fail/alg-none": (_alg_none, "badSignatureAlgorithm", 400),
    "fail/alg-HS256": (_alg_hs256, "badSignatureAlgorithm", 400),
    "fail/alg-does-not-fit-the-account-key": (_alg_not_the_account_keys,
                                              "badSignatureAlgorithm", 400),
    "fail/alg-does-not-fit-the-jwk": (_alg_not_the_jwks, "badSignatureAlgorithm", 400),
    "fail/RS256-with-an-EC-jwk": (_rs256_with_ec_jwk, "badSignatureAlgorithm", 400),
    "fail/jwk-and-kid": (_jwk_and_kid, "malformed", 400),
    "fail/neither-jwk-nor-kid": (_neither_jwk_nor_kid, "malformed", 400),
    "fail/jwk-not-an-object": (_jwk_not_an_object, "malformed", 400),
    "fail/several-signatures": (_several_signatures, "malformed", 400),
    "fail/unprotected-header": (_unprotected_header, "malformed", 400),
    "fail/url-not-the-request-url": (_url_not_the_request_url, "unauthorized", 403),
    "fail/no-url": (_no_url, "unauthorized", 403),
    "fail/no-nonce": (_no_nonce, "badNonce", 400),
    "fail/made-up-nonce": (_made_up_nonce, "badNonce", 400),
    "fail/bad-signature": (_bad_signature, "malformed", 400),
    "fail/unknown-kid": (_unknown_kid, "accountDoesNotExist", 400),
    "fail/kid-of-another-profile": (_kid_of_another_profile, "accountDoesNotExist", 400),
    "fail/rsa-1024-account-key": (_rsa_1024_account, "badPublicKey", 400),
    "fail/body-not-json": (_body_not_json, "malformed", 400),
    "fail/protected-header-not-json": (_protected_not_json, "malformed", 400),
    "fail/padded-base64url": (_padded_base64, "malformed", 400),
}


@pytest.mark.parametrize("case", list(JWS_CASES))
def test_jws(world: World, acct: Client, case: str) -> None:
    build, type_, status = JWS_CASES[case]
    assert_problem(build(world, acct), type_, status)
    assert world.stored_for(acct) == []


def test_fail_replayed_nonce_gets_a_fresh_one(acct: Client) -> None:
    nonce = acct.nonce()
    first = acct.post(acct.directory["newOrder"], json.loads(ORDER), nonce=nonce)
    assert first.status_code == 201, first.text
    again = acct.post(acct.directory["newOrder"], json.loads(ORDER), nonce=nonce)
    assert_problem(again, "badNonce", 400)
    # RFC 8555 6.5: the error carries a fresh nonce the client can retry with.
    fresh = again.headers["Replay-Nonce"]
    assert fresh != nonce
    retry = acct.post(acct.directory["newOrder"], json.loads(ORDER), nonce=fresh)
    assert retry.status_code == 201, retry.text


def test_fail_wrong_content_type(acct: Client) -> None:
    url = acct.directory["newOrder"]
    for ctype in ("application/json", "text/plain"):
        assert_problem(acct.raw(url, acct.jws(url, json.loads(ORDER)), ctype), "malformed", 415)


def test_fail_oversized_body(acct: Client) -> None:
    url = acct.directory["newOrder"]
    # Above the JWS limit (64 KiB) and below the listener's (256 KiB): the ACME answer.
    big = acct.jws(url, {"identifiers": [{"type": "dns", "value": "big.lab.test"}],
                         "padding": "x" * 100_000})
    assert_problem(acct.raw(url, big), "malformed", 413)
    # Above the listener's limit the body is refused before ACME reads it, still as a
    # problem document (without a nonce: no ACME code ran).
    huge = acct.raw(url, b"{" + b" " * 300_000 + b"}")
    assert huge.status_code == 413
    assert huge.headers["content-type"] == "application/problem+json"
    assert huge.json()["type"] == "urn:ietf:params:acme:error:malformed"


def test_fail_get_on_post_only_resources(world: World, acct: Client) -> None:
    http = world.https()
    try:
        for name in ("newAccount", "newOrder", "revokeCert", "keyChange"):
            r = http.get(acct.directory[name])
            doc = assert_problem(r, "malformed", 405)
            assert "POST" in r.headers["Allow"], (name, r.headers, doc)
        assert acct.kid is not None
        assert_problem(http.get(acct.kid), "malformed", 405)
    finally:
        http.close()


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384", "p521", "ed25519"])
def test_ok_account_key_types(world: World, kind: str) -> None:
    k: Key
    private = key(kind)
    if kind.startswith("rsa"):
        k = RSAKey.import_key(private)
    elif kind == "ed25519":
        k = OKPKey.import_key(private)
    else:
        k = ECKey.import_key(private)
    c = world.client(key=k)
    assert get(c, c.kid or "")["status"] == "valid"


# -- accounts (RFC 8555 7.3) ---------------------------------------------------------------


def test_ok_new_account_then_same_key_finds_it(world: World) -> None:
    c = world.client(register=False)
    first = c.register(contact=["mailto:a@lab.test"])
    assert first.status_code == 201, first.text
    doc = first.json()
    assert doc["status"] == "valid" and doc["contact"] == ["mailto:a@lab.test"]
    assert doc["orders"] == f"{first.headers['Location']}/orders"
    again = c.register()
    assert again.status_code == 200, again.text
    assert again.headers["Location"] == first.headers["Location"]
    existing = c.post(c.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert existing.status_code == 200
    assert existing.headers["Location"] == first.headers["Location"]


def test_fail_only_return_existing_for_an_unknown_key(world: World) -> None:
    c = world.client(register=False)
    r = c.post(c.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert_problem(r, "accountDoesNotExist", 400)
    assert "Location" not in r.headers
    # ...and nothing was created: the key still has no account.
    r = c.post(c.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert_problem(r, "accountDoesNotExist", 400)


@pytest.mark.parametrize(("contact", "type_"), [
    (["tel:+15555550100"], "unsupportedContact"),
    (["https://lab.test/contact"], "unsupportedContact"),
    (["mailto:no-at-sign"], "invalidContact"),
    (["mailto:a@lab.test,b@lab.test"], "invalidContact"),
    (["mailto:a@bad..domain"], "invalidContact"),
    ("mailto:a@lab.test", "malformed"),
])
def test_fail_contact(world: World, contact: Any, type_: str) -> None:
    c = world.client(register=False)
    assert_problem(c.register(contact=contact), type_, 400)


def test_ok_update_contact(world: World) -> None:
    c = world.client(contact=["mailto:old@lab.test"])
    assert c.kid is not None
    r = c.post(c.kid, {"contact": ["mailto:new@lab.test", "mailto:oncall@lab.test"]})
    assert r.status_code == 200, r.text
    assert get(c, c.kid)["contact"] == ["mailto:new@lab.test", "mailto:oncall@lab.test"]
    assert_problem(c.post(c.kid, {"contact": ["tel:+15555550100"]}), "unsupportedContact")
    assert_problem(c.post(c.kid, {"status": "revoked"}), "malformed", 400)
    assert get(c, c.kid)["contact"] == ["mailto:new@lab.test", "mailto:oncall@lab.test"]


def test_fail_another_accounts_url(world: World, acct: Client) -> None:
    c = world.client()
    assert acct.kid is not None
    assert_problem(c.post(acct.kid), "unauthorized", 403)
    assert_problem(c.post(f"{acct.kid}/orders"), "unauthorized", 403)


def test_deactivated_account_is_refused(world: World) -> None:
    c = world.client()
    assert c.kid is not None
    url, _ = new_order(c, "deact.lab.test")
    r = c.post(c.kid, {"status": "deactivated"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "deactivated"
    # RFC 8555 7.3.6: any later POST or POST-as-GET from it is 401 unauthorized.
    assert_problem(c.post(c.kid), "unauthorized", 401)
    assert_problem(c.new_order("deact2.lab.test"), "unauthorized", 401)
    assert_problem(c.post(url), "unauthorized", 401)
    assert_problem(c.post(c.kid, {"status": "valid"}), "unauthorized", 401)
    # Its key cannot open a new account here either.
    assert_problem(c.register(), "unauthorized", 401)


# -- key rollover (RFC 8555 7.3.5) ---------------------------------------------------------


def key_change(c: Client, new_key: Key, *, inner: dict[str, Any] | None = None,
               drop: tuple[str, ...] = (), payload: dict[str, Any] | None = None,
               signer: Key | None = None) -> httpx.Response:
    url = c.directory["keyChange"]
    header: dict[str, Any] = {"alg": alg_of(new_key), "jwk": new_key.as_dict(private=False),
                              "url": url, **(inner or {})}
    for k in drop:
        header.pop(k)
    body = payload if payload is not None else {"account": c.kid,
                                                 "oldKey": c.key.as_dict(private=False)}
    return c.post(url, sign(signer or new_key, header, json.dumps(body).encode()))


def test_ok_key_rollover(world: World) -> None:
    c = world.client()
    old_key, old_kid = c.key, c.kid
    new_key = ECKey.generate_key("P-256")
    r = key_change(c, new_key)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "valid"
    # The old key no longer signs for the account; the new one does.
    assert_problem(c.post(c.kid or ""), "malformed", 400)
    c.key = new_key
    assert get(c, c.kid or "")["status"] == "valid"
    found = c.post(c.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert found.status_code == 200 and found.headers["Location"] == old_kid
    gone = c.post(c.directory["newAccount"], {"onlyReturnExisting": True}, key=old_key,
                  use_jwk=True)
    assert_problem(gone, "accountDoesNotExist", 400)


def _kc_inner_kid(w: World, c: Client) -> httpx.Response:
    return key_change(c, ECKey.generate_key("P-256"), inner={"kid": c.kid}, drop=("jwk",))


def _kc_inner_nonce(w: World, c: Client) -> httpx.Response:
    return key_change(c, ECKey.generate_key("P-256"), inner={"nonce": c.nonce()})


def _kc_inner_url(w: World, c: Client) -> httpx.Response:
    return key_change(c, ECKey.generate_key("P-256"), inner={"url": c.directory["newOrder"]})


def _kc_account_not_kid(w: World, c: Client) -> httpx.Response:
    other = w.client()
    return key_change(c, ECKey.generate_key("P-256"),
                      payload={"account": other.kid, "oldKey": c.key.as_dict(private=False)})


def _kc_old_key_wrong(w: World, c: Client) -> httpx.Response:
    wrong = ECKey.generate_key("P-256").as_dict(private=False)
    return key_change(c, ECKey.generate_key("P-256"),
                      payload={"account": c.kid, "oldKey": wrong})


def _kc_not_signed_by_new_key(w: World, c: Client) -> httpx.Response:
    return key_change(c, ECKey.generate_key("P-256"), signer=ECKey.generate_key("P-256"))


def _kc_weak_new_key(w: World, c: Client) -> httpx.Response:
    return key_change(c, rsa_1024())


def _kc_same_key(w: World, c: Client) -> httpx.Response:
    return key_change(c, c.key)


KEY_CHANGE_CASES: dict[str, tuple[JwsCase, str, int]] = {
    "fail/inner-has-kid-not-jwk": (_kc_inner_kid, "malformed", 400),
    "fail/inner-has-a-nonce": (_kc_inner_nonce, "malformed", 400),
    "fail/inner-url-differs": (_kc_inner_url, "malformed", 400),
    "fail/account-is-not-the-kid": (_kc_account_not_kid, "malformed", 400),
    "fail/oldKey-is-not-the-account-key": (_kc_old_key_wrong, "malformed", 400),
    "fail/inner-not-signed-by-the-new-key": (_kc_not_signed_by_new_key, "malformed", 400),
    "fail/new-key-too-weak": (_kc_weak_new_key, "badPublicKey", 400),
    "fail/new-key-is-the-old-key": (_kc_same_key, "malformed", 400),
}


@pytest.mark.parametrize("case", list(KEY_CHANGE_CASES))
def test_key_change(world: World, case: str) -> None:
    c = world.client()
    build, type_, status = KEY_CHANGE_CASES[case]
    assert_problem(build(world, c), type_, status)
    assert get(c, c.kid or "")["status"] == "valid"  # the old key still works


def test_fail_key_change_to_another_accounts_key(world: World) -> None:
    c, other = world.client(), world.client()
    r = key_change(c, other.key)
    # RFC 8555 7.3.5: 409 Conflict, with the other account's URL.
    assert_problem(r, "malformed", 409)
    assert r.headers["Location"] == other.kid
    assert get(c, c.kid or "")["status"] == "valid"
    assert get(other, other.kid or "")["status"] == "valid"


# -- orders and authorizations (RFC 8555 7.4, 7.5; RFC 8738) -------------------------------


def test_ok_order_with_dns_and_ip_identifiers(world: World) -> None:
    c = world.client()
    url, order = new_order(c, "both.lab.test", "127.0.0.9")
    assert order["status"] == "pending"
    assert order["identifiers"] == [{"type": "dns", "value": "both.lab.test"},
                                    {"type": "ip", "value": "127.0.0.9"}]
    assert url.startswith(f"{world.served.https}/acme/{LAB}/order/")
    assert dt.datetime.fromisoformat(order["expires"]) > dt.datetime.now(dt.UTC)
    by_ident = {a["identifier"]["value"]: a for _, a in authorizations(c, order)}
    assert {c_["type"] for c_ in by_ident["both.lab.test"]["challenges"]} == {
        "http-01", "dns-01", "tls-alpn-01"}
    # RFC 8738 7: no dns-01 for an IP address.
    assert {c_["type"] for c_ in by_ident["127.0.0.9"]["challenges"]} == {
        "http-01", "tls-alpn-01"}
    for a in by_ident.values():
        assert a["status"] == "pending" and "wildcard" not in a
        for chal in a["challenges"]:
            assert chal["status"] == "pending" and len(chal["token"]) >= 43
    assert get(c, url) == order


def test_fail_identifiers_outside_the_profile(world: World) -> None:
    c = world.client()
    r = c.new_order("fine.lab.test", "evil.example.com", "8.8.8.8")
    doc = assert_problem(r, "rejectedIdentifier", 400)
    subs = doc["subproblems"]
    assert [s["identifier"] for s in subs] == [{"type": "dns", "value": "evil.example.com"},
                                              {"type": "ip", "value": "8.8.8.8"}]
    assert all(s["type"] == URN + "rejectedIdentifier" and s["detail"] for s in subs)
    assert get(c, f"{c.kid}/orders")["orders"] == []
    unsupported = c.post(c.directory["newOrder"],
                         {"identifiers": [{"type": "email", "value": "a@lab.test"}]})
    assert_problem(unsupported, "unsupportedIdentifier", 400)
    assert_problem(c.post(c.directory["newOrder"], {"identifiers": []}), "malformed")


def test_ok_wildcard_gets_only_dns01(world: World) -> None:
    c = world.client()
    _, order = new_order(c, "*.wild.lab.test")
    ((_, authz),) = authorizations(c, order)
    # RFC 8555 7.1.3/7.1.4: the identifier without "*.", and wildcard: true.
    assert authz["identifier"] == {"type": "dns", "value": "wild.lab.test"}
    assert authz["wildcard"] is True
    assert [ch["type"] for ch in authz["challenges"]] == ["dns-01"]
    # The default profile allows no wildcards.
    other = world.client(profile=None)
    assert_problem(other.new_order("*.wild.test"), "rejectedIdentifier", 400)


def test_ok_wildcard_issued_through_dns01(world: World) -> None:
    c = world.client()
    got = issue(world, c, "*.wild2.lab.test", "wild2.lab.test")
    san = got.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sorted(san.value.get_values_for_type(x509.DNSName)) == ["*.wild2.lab.test",
                                                                   "wild2.lab.test"]


def test_ok_authorization_reuse_is_per_account(world: World) -> None:
    a, b = world.client(), world.client()
    _, first = ready_order(world, a, "reuse.lab.test")
    url, second = new_order(a, "reuse.lab.test")
    assert second["authorizations"] == first["authorizations"]
    assert second["status"] == "ready"
    assert get(a, url)["status"] == "ready"
    _, theirs = new_order(b, "reuse.lab.test")
    assert theirs["authorizations"] != first["authorizations"]
    assert theirs["status"] == "pending"
    # Another account cannot read the first account's authorization.
    assert_problem(b.post(first["authorizations"][0]), "malformed", 404)
    # Pending, an authorization lives 7 days (pending_authorization_lifetime); once valid,
    # authorization_lifetime (30 days by default) from its validation.
    valid = get(a, first["authorizations"][0])
    pending = get(b, theirs["authorizations"][0])
    left = {name: dt.datetime.fromisoformat(doc["expires"].replace("Z", "+00:00"))
            - dt.datetime.now(dt.UTC) for name, doc in (("valid", valid), ("pending", pending))}
    assert dt.timedelta(days=29) < left["valid"] <= dt.timedelta(days=30)
    assert dt.timedelta(days=6) < left["pending"] <= dt.timedelta(days=7)


def test_ok_orders_list(world: World) -> None:
    c = world.client()
    urls = [new_order(c, f"list{i}.lab.test")[0] for i in range(3)]
    doc = get(c, f"{c.kid}/orders")
    assert doc["orders"] == urls
    # The list is fetched with POST-as-GET only.
    assert_problem(c.post(f"{c.kid}/orders", {}), "malformed", 400)


def test_authorization_deactivation(world: World) -> None:
    c = world.client()
    url, order = new_order(c, "deauthz.lab.test")
    ((authz_url, _),) = authorizations(c, order)
    assert_problem(c.post(authz_url, {"status": "valid"}), "malformed", 400)
    r = c.post(authz_url, {"status": "deactivated"})
    assert r.status_code == 200 and r.json()["status"] == "deactivated"
    assert get(c, url)["status"] == "invalid"


def test_finalize_checks_then_issues(world: World) -> None:
    c = world.client()
    names = ["fin.lab.test", "127.0.0.2"]
    url, order = new_order(c, *names)
    good = csr(names)
    # Before the authorizations are valid.
    assert_problem(finalize(c, order, good), "orderNotReady", 403)
    for authz_url, authz in authorizations(c, order):
        if authz["identifier"]["type"] == "dns":
            dns01(world, c, authz_url, authz)
        else:
            chal = challenge_of(authz, "http-01")
            world.web.serve(token_path(chal), c.key_authorization(chal["token"]))
            assert answer(c, authz_url, chal)["status"] == "valid"
    order = wait(c, url, busy=("pending",))
    assert order["status"] == "ready"
    bad: dict[str, x509.CertificateSigningRequest] = {
        "an extra name": csr([*names, "extra.lab.test"]),
        "a missing name": csr(names[:1]),
        "a CN outside the order": csr(names, cn="cn.lab.test"),
        "the account key": csr(names, private_key=c.key.private_key),
        "an RSA-1024 key": csr(names, private_key=key("rsa1024")),
        "a key the profile refuses": csr(names, private_key=key("ed25519")),
    }
    for why, request in bad.items():
        r = finalize(c, order, request)
        doc = assert_problem(r, "badCSR", 400)
        assert get(c, url)["status"] == "ready", (why, doc)
    assert_problem(c.post(order["finalize"], {"csr": "bm90IGEgQ1NS"}), "badCSR", 400)
    assert_problem(c.post(order["finalize"], {"csr": "not base64url!"}), "malformed", 400)
    assert_problem(c.post(order["finalize"]), "malformed", 400)
    assert world.stored_for(c) == []

    r = finalize(c, order, good)
    assert r.status_code == 200, r.text
    assert r.headers["Location"] == url
    done = wait(c, url)
    assert done["status"] == "valid" and done["certificate"]
    assert_problem(finalize(c, done, good), "orderNotReady", 403)

    cert = c.post(done["certificate"])
    assert cert.status_code == 200, cert.text
    assert cert.headers["content-type"] == "application/pem-certificate-chain"
    links = cert.headers["Link"]
    up = [part.split(">")[0].lstrip("< ") for part in links.split(",") if 'rel="up"' in part]
    assert len(up) == 1, links
    chain = x509.load_pem_x509_certificates(cert.content)
    assert [x.subject for x in chain[1:]] == [world.served.issuing.subject]
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"fin.lab.test"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.2"}
    assert leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == good.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    # The "up" link is the issuer's certificate.
    issuer = httpx.get(up[0], trust_env=False)
    assert issuer.status_code == 200
    assert x509.load_der_x509_certificate(issuer.content) == world.served.issuing
    stored = world.stored_for(c)
    assert [s.serial for s in stored] == [format(leaf.serial_number, "x")]
    assert stored[0].protocol == "acme"
    # The certificate and the order are fetched with POST-as-GET only, by their owner.
    assert_problem(c.post(done["certificate"], {}), "malformed", 400)
    assert_problem(c.post(url, {}), "malformed", 400)
    other = world.client()
    assert_problem(other.post(done["certificate"]), "malformed", 404)
    assert_problem(other.post(url), "malformed", 404)


# -- revocation (RFC 8555 7.6) -------------------------------------------------------------


def revoke(c: Client, cert: x509.Certificate, reason: Any = None, **kwargs: Any
           ) -> httpx.Response:
    payload: dict[str, Any] = {"certificate": b64(cert.public_bytes(serialization.Encoding.DER))}
    if reason is not None:
        payload["reason"] = reason
    return c.post(c.directory["revokeCert"], payload, **kwargs)


def revoked(world: World, cert: x509.Certificate) -> CertificateRecord:
    serial = format(cert.serial_number, "x")
    (rec,) = [s for s in world.stored() if s.serial == serial]
    return rec


def test_revocation(world: World) -> None:
    c, other = world.client(), world.client()
    by_account, by_key, refused = (issue(world, c, "revoke.lab.test") for _ in range(3))

    # Another account may not revoke it; nor may a key that is not the certificate's.
    assert_problem(revoke(other, refused.certificate), "unauthorized", 403)
    stranger = ECKey.generate_key("P-256")
    assert_problem(revoke(c, refused.certificate, key=stranger, use_jwk=True),
                   "unauthorized", 403)
    for reason in (2, 7, 8, 10, -1, "1", True, 1.5):
        assert_problem(revoke(c, refused.certificate, reason), "badRevocationReason", 400)
    assert not revoked(world, refused.certificate).revoked

    # By the account that ordered it.
    r = revoke(c, by_account.certificate, 4)
    assert r.status_code == 200, r.text
    rec = revoked(world, by_account.certificate)
    assert rec.revoked and rec.revocation_reason == "superseded", rec
    assert_problem(revoke(c, by_account.certificate), "alreadyRevoked", 400)

    # By the certificate's own key, in the jwk form.
    cert_key = ECKey.import_key(by_key.key)
    r = revoke(c, by_key.certificate, 1, key=cert_key, use_jwk=True)
    assert r.status_code == 200, r.text
    rec = revoked(world, by_key.certificate)
    assert rec.revoked and rec.revocation_reason == "keyCompromise", rec
    assert_problem(revoke(c, by_key.certificate, key=cert_key, use_jwk=True),
                   "alreadyRevoked", 400)

    # A certificate this CA did not issue.
    assert_problem(revoke(c, self_signed(by_key.key)), "malformed", 404)


def self_signed(private: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "not ours")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(private, hashes.SHA256()))


# -- renewal information (RFC 9773) --------------------------------------------------------


def cert_id(cert: x509.Certificate, serial: int | None = None) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    n = cert.serial_number if serial is None else serial
    return (base64.urlsafe_b64encode(aki.key_identifier).rstrip(b"=").decode() + "." +
            base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 8) // 8, "big")
                                     ).rstrip(b"=").decode())


def renewal_info(world: World, c: Client, certid: str) -> httpx.Response:
    with world.https() as http:
        return http.get(f"{c.directory['renewalInfo']}/{certid}")


def test_renewal_info(world: World) -> None:
    c = world.client()
    got = issue(world, c, "ari.lab.test")
    cert = got.certificate
    r = renewal_info(world, c, cert_id(cert))
    assert r.status_code == 200, r.text
    assert int(r.headers["Retry-After"]) > 0
    window = r.json()["suggestedWindow"]
    start = dt.datetime.fromisoformat(window["start"])
    end = dt.datetime.fromisoformat(window["end"])
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert nb < start < end < na
    # The lab profile's window: from 1/2 to 3/4 of the lifetime.
    life = na - nb
    assert abs(start - (nb + life / 2)) <= dt.timedelta(seconds=1)
    assert abs(end - (nb + life * 3 / 4)) <= dt.timedelta(seconds=1)

    assert revoke(c, cert, 1).status_code == 200
    window = renewal_info(world, c, cert_id(cert)).json()["suggestedWindow"]
    now = dt.datetime.now(dt.UTC)
    start = dt.datetime.fromisoformat(window["start"])
    end = dt.datetime.fromisoformat(window["end"])
    # Revoked: renew now.
    assert start < end and now - dt.timedelta(minutes=5) < end <= now + dt.timedelta(seconds=5)

    unknown = renewal_info(world, c, cert_id(cert, secrets.randbits(120) | 1 << 100))
    assert_problem(unknown, "malformed", 404)
    other_ca = cert_id(cert).split(".")[1]
    assert_problem(renewal_info(world, c, f"{b64(secrets.token_bytes(20))}.{other_ca}"),
                   "malformed", 404)
    assert_problem(renewal_info(world, c, "no-dot-here"), "malformed", 400)


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limits(world: World) -> None:
    a, b = world.client(LIMITED), world.client(LIMITED)
    for i in range(2):
        new_order(a, f"rl-a{i}.lab.test")
    r = a.new_order("rl-a2.lab.test")
    doc = assert_problem(r, "rateLimited", 429)
    assert "account" in doc["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 3601
    new_order(b, "rl-b0.lab.test")  # the profile's third order in the window
    r = b.new_order("rl-b1.lab.test")
    doc = assert_problem(r, "rateLimited", 429)
    assert "profile" in doc["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 3601


def test_rate_limit_on_pending_authorizations(world: World) -> None:
    c = world.client(FEW_AUTHZ)
    new_order(c, "pa1.lab.test", "pa2.lab.test")
    r = c.new_order("pa3.lab.test")
    doc = assert_problem(r, "rateLimited", 429)
    assert "pending authorizations" in doc["detail"]
    assert int(r.headers["Retry-After"]) >= 1
    # The limit is the account's: another account on the profile is not held back.
    _, order = new_order(world.client(FEW_AUTHZ), "pa4.lab.test")
    assert order["status"] == "pending"


def test_replaces(world: World) -> None:
    """RFC 9773 5: an order may name the certificate it replaces; once only, by its owner,
    for an order that shares a name with it; the field is echoed."""
    c, other = world.client(), world.client()
    old = issue(world, c, "repl.lab.test", "repl2.lab.test")
    certid = cert_id(old.certificate)
    idents = [{"type": "dns", "value": "repl.lab.test"}]
    assert_problem(other.post(other.directory["newOrder"],
                              {"identifiers": idents, "replaces": certid}), "malformed", 400)
    assert_problem(c.post(c.directory["newOrder"],
                          {"identifiers": [{"type": "dns", "value": "unrelated.lab.test"}],
                           "replaces": certid}), "malformed", 400)
    assert_problem(c.post(c.directory["newOrder"], {"identifiers": idents, "replaces": 7}),
                   "malformed", 400)
    r = c.post(c.directory["newOrder"], {"identifiers": idents, "replaces": certid})
    assert r.status_code == 201, r.text
    assert r.json()["replaces"] == certid
    assert get(c, r.headers["Location"])["replaces"] == certid
    again = c.post(c.directory["newOrder"], {"identifiers": idents, "replaces": certid})
    assert_problem(again, "alreadyReplaced", 409)


def test_order_validity_fields(world: World) -> None:
    """newOrder's notBefore/notAfter are held to the profile's validity rules at once."""
    c = world.client()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    idents = [{"type": "dns", "value": "validity.lab.test"}]

    def order(**fields: dt.datetime) -> httpx.Response:
        payload: dict[str, object] = {"identifiers": idents}
        payload.update({k: v.strftime("%Y-%m-%dT%H:%M:%SZ") for k, v in fields.items()})
        return c.post(c.directory["newOrder"], payload)

    too_long = assert_problem(order(notAfter=now + dt.timedelta(days=400)), "malformed", 400)
    assert "exceeds this profile's maximum" in too_long["detail"]
    backdated = assert_problem(order(notBefore=now - dt.timedelta(days=30),
                                     notAfter=now + dt.timedelta(days=1)), "malformed", 400)
    assert "validity.backdate" in backdated["detail"]
    inverted = assert_problem(order(notBefore=now + dt.timedelta(hours=12),
                                    notAfter=now + dt.timedelta(hours=1)), "malformed", 400)
    assert "not after notBefore" in inverted["detail"]
    ok = order(notAfter=now + dt.timedelta(days=7))
    assert ok.status_code == 201, ok.text
    assert ok.json()["notAfter"] == (now + dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
