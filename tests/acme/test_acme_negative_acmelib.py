"""Issue 3's negative protocol table, driven through certbot's ``acme`` library against a
real ``certwright serve``.

``test_acme_protocol.py`` drives the same rules with the tests' own raw JWS client; here
each case goes through ``acme.client.ClientV2`` and ``ClientNetwork`` as certbot does,
so the problem documents are read the way a real client reads them (``messages.Error``,
its ``typ`` and ``code``). Where the library will not write the bad request itself, the
case writes only the JWS (with josepy, or by hand for ``alg: none``, which josepy cannot
sign) and the library's ``post`` path still sends it and reads the answer.

The library raises a problem's type but drops the HTTP status, so ``Network`` records
every response it got; each case asserts the type as the library raised it, the status
and content type of the answers behind it, that ``ClientNetwork.post`` retried a
badNonce exactly once (RFC 8555 6.5) and nothing else, and that the store holds no more
certificates than before. Validation is real (dns-01 TXT records at pebble-challtestsrv);
see ``tests/acme/acme_world.py``. The commonName cases (issue 11, RFC 8555 7.4) finalize
CSRs that name an identifier in the CN, one of them made by ``openssl req -subj /CN=``
with no subjectAltName at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from acme import challenges, client, crypto_util, messages
from acme import jws as acme_jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.interfaces import JSONDeSerializable
from josepy.json_util import decode_b64jose, encode_b64jose
from josepy.jwa import ES256, HS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKOct

from tests.acme.acme_world import LAB, URN, World, acme_world
from tests.conftest import require_peer

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl")

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with acme_world(tmp_path_factory.mktemp("acme-negative-acmelib")) as w:
        yield w


# -- the library, recording what it got ----------------------------------------------------

# (JWS payload, nonce as the library decoded it, request URL) -> the JWS to send
WriteJws = Callable[[bytes, bytes, str], str]


class Network(client.ClientNetwork):
    """The library's ``ClientNetwork``, with two additions: it keeps every response
    (``messages.Error`` carries the problem's type, not the HTTP status), and a case may
    write the next JWS itself instead of ``_wrap_in_jws``. Nonces, retries, headers and
    the reading of answers stay the library's."""

    def __init__(self, key: JWK, alg: JWASignature, verify: str) -> None:
        super().__init__(key, alg=alg, verify_ssl=verify,  # type: ignore[arg-type]
                         user_agent="certwright-tests")
        self.session.trust_env = False  # loopback, never through a proxy
        self.responses: list[requests.Response] = []
        self.write_next: WriteJws | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any
                      ) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.responses.append(response)
        return response

    def _wrap_in_jws(self, obj: JSONDeSerializable, nonce: str, url: str) -> str:
        write, self.write_next = self.write_next, None
        if write is None:
            return super()._wrap_in_jws(obj, nonce, url)
        # The library hands the nonce over decoded (``_get_nonce``), as bytes.
        assert isinstance(nonce, bytes)
        return write(obj.json_dumps(indent=2).encode() if obj else b"", nonce, url)


@dataclasses.dataclass
class Lib:
    """One account on the lab profile, opened with ``ClientV2.new_account``."""

    world: World
    net: Network
    acme: client.ClientV2
    regr: messages.RegistrationResource
    afterwards: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @property
    def requester(self) -> str:
        return f"acme-account:{self.regr.uri.rsplit('/', 1)[1]}"

    def url(self, resource: str) -> str:
        return str(self.acme.directory[resource])


@pytest.fixture
def lib(world: World) -> Iterator[Lib]:
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = Network(key, ES256, str(world.served.root_pem))
    try:
        acme = client.ClientV2(client.ClientV2.get_directory(world.directory(LAB), net), net)
        regr = acme.new_account(messages.NewRegistration.from_data(
            email="negative@lab.test", terms_of_service_agreed=True))
        assert regr.body.status == "valid"  # a plain string in a Registration
        yield Lib(world, net, acme, regr)
    finally:
        net.session.close()


def pem(private: Any) -> bytes:
    return bytes(private.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def csr_pem(names: list[str], private: Any = None) -> bytes:
    if private is None:
        private = ec.generate_private_key(ec.SECP256R1())
    return crypto_util.make_csr(pem(private), names)


def cn_csr_pem(cn: str, names: list[str], private: Any = None) -> bytes:
    """A CSR whose subject is ``CN=cn``, with a subjectAltName request for ``names`` (none
    when empty)."""
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    private = private or ec.generate_private_key(ec.SECP256R1())
    return builder.sign(private, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def ready(lib: Lib, *names: str, csr: bytes | None = None) -> messages.OrderResource:
    """``ClientV2.new_order`` for ``names`` (or the names of ``csr``, as the library reads
    them: CN and subjectAltName), each authorization proven with dns-01
    (``answer_challenge``, then ``poll`` until decided)."""
    order = lib.acme.new_order(csr or csr_pem(list(names)))
    for authz in order.authorizations:
        (challb,) = [c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)]
        response, validation = challb.response_and_validation(lib.net.key)
        lib.world.chall.set_txt(challb.validation_domain_name(authz.body.identifier.value),
                                validation)
        lib.acme.answer_challenge(challb, response)
        deadline = time.monotonic() + 20
        while authz.body.status == messages.STATUS_PENDING:
            assert time.monotonic() < deadline, authz
            time.sleep(0.05)  # poll_authorizations would sleep a whole second
            authz, _ = lib.acme.poll(authz)
        assert authz.body.status == messages.STATUS_VALID, authz.body
    body = messages.Order.from_json(lib.acme._post_as_get(order.uri).json())
    assert body.status == messages.STATUS_READY, body
    updated: messages.OrderResource = order.update(body=body)
    return updated


def deadline(seconds: float = 20) -> dt.datetime:
    return dt.datetime.now() + dt.timedelta(seconds=seconds)


# -- the table -----------------------------------------------------------------------------

Call = Callable[[], object]  # the library call that must fail


def _replayed_nonce(lib: Lib) -> Call:
    # ClientNetwork.post retries a badNonce once (with whatever nonce it holds next): two
    # spent nonces in its pool, and the retry is refused too.
    spent = {spend_a_nonce(lib), spend_a_nonce(lib)}
    lib.net._nonces.clear()
    lib.net._nonces.update(spent)  # type: ignore[arg-type]
    return lambda: lib.acme.new_order(csr_pem(["replay.lab.test"]))


def spend_a_nonce(lib: Lib) -> bytes:
    """A nonce the server handed out and then accepted once (a library POST-as-GET)."""
    lib.net._nonces.clear()
    nonce: Any = lib.net._get_nonce(lib.url("newNonce"), lib.url("newNonce"))
    lib.net._nonces.add(nonce)
    lib.acme._post_as_get(lib.regr.uri)
    assert nonce not in lib.net._nonces
    return bytes(nonce)


def _wrong_url(lib: Lib) -> Call:
    def write(payload: bytes, nonce: bytes, url: str) -> str:
        assert url == lib.url("newOrder")
        return str(acme_jws.JWS.sign(payload, key=lib.net.key, alg=lib.net.alg, nonce=nonce,
                                     url=lib.url("revokeCert"), kid=lib.regr.uri)
                   .json_dumps(indent=2))

    lib.net.write_next = write
    return lambda: lib.acme.new_order(csr_pem(["wrong-url.lab.test"]))


def _alg_none(lib: Lib) -> Call:
    def write(payload: bytes, nonce: bytes, url: str) -> str:
        # josepy has no "none" algorithm to sign with: the JWS is written by hand.
        protected = {"alg": "none", "kid": lib.regr.uri, "nonce": encode_b64jose(nonce),
                     "url": url}
        return json.dumps({"protected": encode_b64jose(json.dumps(protected).encode()),
                           "payload": encode_b64jose(payload), "signature": ""})

    lib.net.write_next = write
    return lambda: lib.acme.new_order(csr_pem(["alg-none.lab.test"]))


def _alg_hs256(lib: Lib) -> Call:
    # The library signs with whatever key and algorithm its network holds.
    lib.net.key = JWKOct(key=secrets.token_bytes(32))
    lib.net.alg = HS256
    return lambda: lib.acme.new_order(csr_pem(["alg-hs256.lab.test"]))


def _jwk_and_kid(lib: Lib) -> Call:
    # acme.jws.JWS.sign leaves out the jwk when it has a kid; josepy's Signature.sign,
    # under it, does not have to.
    def write(payload: bytes, nonce: bytes, url: str) -> str:
        signature = acme_jws.Signature.sign(
            payload, key=lib.net.key, alg=lib.net.alg, include_jwk=True,
            protect=frozenset({"alg", "jwk", "kid", "nonce", "url"}),
            nonce=nonce, url=url, kid=lib.regr.uri)
        return str(acme_jws.JWS(payload=payload, signatures=(signature,)).json_dumps(indent=2))

    lib.net.write_next = write
    return lambda: lib.acme.new_order(csr_pem(["jwk-and-kid.lab.test"]))


def _unknown_kid(lib: Lib) -> Call:
    unknown = lib.regr.uri.rsplit("/", 1)[0] + "/" + secrets.token_urlsafe(12)
    lib.net.account = lib.regr.update(uri=unknown)
    return lambda: lib.acme.new_order(csr_pem(["unknown-kid.lab.test"]))


def _deactivated_account(lib: Lib) -> Call:
    regr = lib.acme.deactivate_registration(lib.regr)
    assert regr.body.status == "deactivated", regr.body
    # RFC 8555 7.3.6: the server MUST NOT accept further requests signed by it (401).
    return lambda: lib.acme.new_order(csr_pem(["deactivated.lab.test"]))


def _finalize_before_ready(lib: Lib) -> Call:
    order = lib.acme.new_order(csr_pem(["not-ready.lab.test"]))
    assert order.body.status == messages.STATUS_PENDING, order.body
    # finalize_order swallows orderNotReady and polls on (RFC 8555 7.4 lets a client
    # retry); begin_finalization is the library's call that shows it.
    return lambda: lib.acme.begin_finalization(order)


def _finalize_with(names: Callable[[str], list[str]], key: Callable[[Lib], Any] | None = None,
                   cn: Callable[[str], str] | None = None, order_names: int = 1
                   ) -> Callable[[Lib], Call]:
    """A ready order for ``order_names`` names (the first is ``name``), finalized with the
    CSR of ``names(name)`` and ``key`` (subject ``CN=cn(name)`` when ``cn`` is given)."""
    def case(lib: Lib) -> Call:
        name = f"fin-{secrets.token_hex(4)}.lab.test"
        order = ready(lib, name, *(f"{i}.{name}" for i in range(1, order_names)))
        private = key(lib) if key else None
        bad = order.update(csr_pem=cn_csr_pem(cn(name), names(name), private) if cn
                           else csr_pem(names(name), private))

        def still_ready() -> None:  # refused, the order waits for a good CSR
            again = messages.Order.from_json(lib.acme._post_as_get(order.uri).json())
            assert again.status == messages.STATUS_READY, again

        lib.afterwards.append(still_ready)
        return lambda: lib.acme.finalize_order(bad, deadline())
    return case


def _rsa_1024(lib: Lib) -> Any:
    return rsa.generate_private_key(65537, 1024)


def _account_key(lib: Lib) -> Any:
    assert isinstance(lib.net.key, JWKEC)
    return lib.net.key.key


def _outside_the_profile(lib: Lib) -> Call:
    return lambda: lib.acme.new_order(csr_pem(["fine.lab.test", "evil.example.com"]))


def _check_outside(error: messages.Error) -> None:
    (sub,) = error.subproblems or ()
    assert sub.typ == URN + "rejectedIdentifier", sub
    assert sub.identifier == messages.Identifier(typ=messages.IDENTIFIER_FQDN,
                                                 value="evil.example.com")


def _body_over_the_limit(lib: Lib) -> Call:
    # 800 long names: a newOrder of ~90 KB, above the JWS limit (64 KiB), below the
    # listener's (256 KiB), so the ACME front-end is the one refusing it.
    names = [f"{'n' * 55}{i:04d}.lab.test" for i in range(800)]
    return lambda: lib.acme.new_order(csr_pem(names))


@dataclasses.dataclass(frozen=True)
class Fail:
    setup: Callable[[Lib], Call]
    problem: str  # the ACME error code
    status: int
    why: str  # in the detail: the rule, where the type alone does not single it out
    posts: int = 1  # POSTs answered with the problem: ClientNetwork retries badNonce once
    check: Callable[[messages.Error], None] | None = None
    # What the refused JWS's protected header must show (that the case sent what it says).
    sent: Callable[[dict[str, Any], str], bool] | None = None


def protected_header(r: requests.Response) -> dict[str, Any]:
    body = r.request.body
    jws = json.loads(body.decode() if isinstance(body, bytes) else str(body))
    header: dict[str, Any] = json.loads(decode_b64jose(jws["protected"]))
    return header


FAIL: dict[str, Fail] = {
    "fail/replayed-nonce": Fail(_replayed_nonce, "badNonce", 400, "used", posts=2),
    "fail/url-not-the-request-url": Fail(_wrong_url, "unauthorized", 403, "not the request URL",
                                         sent=lambda h, url: h["url"] != url),
    "fail/alg-none": Fail(_alg_none, "badSignatureAlgorithm", 400, "'none'",
                          sent=lambda h, url: h["alg"] == "none"),
    "fail/alg-HS256": Fail(_alg_hs256, "badSignatureAlgorithm", 400, "'HS256'",
                           sent=lambda h, url: h["alg"] == "HS256" and "kid" in h),
    "fail/jwk-and-kid": Fail(_jwk_and_kid, "malformed", 400, "both jwk and kid",
                             sent=lambda h, url: "jwk" in h and "kid" in h),
    "fail/unknown-kid": Fail(_unknown_kid, "accountDoesNotExist", 400, "no account"),
    "fail/deactivated-account": Fail(_deactivated_account, "unauthorized", 401, "deactivated"),
    "fail/finalize-before-ready": Fail(_finalize_before_ready, "orderNotReady", 403,
                                       "not ready"),
    "fail/finalize-with-an-extra-name": Fail(
        _finalize_with(lambda n: [n, "extra.lab.test"]), "badCSR", 400, "extra.lab.test"),
    "fail/csr-rsa-1024": Fail(_finalize_with(lambda n: [n], _rsa_1024), "badCSR", 400, "1024"),
    "fail/csr-key-is-the-account-key": Fail(_finalize_with(lambda n: [n], _account_key),
                                            "badCSR", 400, "account key"),
    # RFC 8555 7.4: a dns identifier may stand in the commonName, the set of names
    # (commonName and subjectAltName) is still exactly the order's.
    "fail/cn-not-an-identifier": Fail(
        _finalize_with(lambda n: [n], cn=lambda n: "other.lab.test"), "badCSR", 400,
        "commonName 'other.lab.test' is not one of the order's identifiers"),
    "fail/cn-only-not-a-dns-name": Fail(
        _finalize_with(lambda n: [], cn=lambda n: "Web Server"), "badCSR", 400,
        "commonName 'Web Server' is not a DNS name"),
    "fail/cn-and-san-differ-from-order": Fail(
        _finalize_with(lambda n: ["extra.lab.test"], cn=lambda n: n, order_names=2),
        "badCSR", 400, "missing: 1.fin-"),
    "fail/identifier-outside-the-profile": Fail(_outside_the_profile, "rejectedIdentifier",
                                                400, "evil.example.com", check=_check_outside),
    "fail/body-over-the-limit": Fail(_body_over_the_limit, "malformed", 413, "larger than"),
}


def assert_problem(r: requests.Response, problem: str, status: int) -> None:
    assert r.headers.get("Content-Type") == PROBLEM, (r.status_code, r.text)
    doc = r.json()
    assert (r.status_code, doc["type"], doc["status"]) == (status, URN + problem, status), doc
    # RFC 8555 6.5: every error answer carries a fresh nonce.
    assert r.headers.get("Replay-Nonce"), r.headers


@pytest.mark.parametrize("case", list(FAIL))
def test_fail(world: World, lib: Lib, case: str) -> None:
    spec = FAIL[case]
    before = len(world.stored())
    call = spec.setup(lib)
    seen = len(lib.net.responses)
    with pytest.raises(messages.Error) as caught:
        call()
    error = caught.value
    assert (error.typ, error.code) == (URN + spec.problem, spec.problem), str(error)
    assert spec.why in (error.detail or ""), str(error)
    if spec.check is not None:
        spec.check(error)
    posts = [r for r in lib.net.responses[seen:] if r.request.method == "POST"]
    assert len(posts) == spec.posts, [(r.status_code, r.text) for r in posts]
    for r in posts:
        assert_problem(r, spec.problem, spec.status)
        if spec.sent is not None:
            assert spec.sent(protected_header(r), str(r.request.url)), protected_header(r)
    for check in lib.afterwards:
        check()
    assert len(world.stored()) == before
    assert [c for c in world.stored() if c.requester == lib.requester] == []


# -- what the library does get through -----------------------------------------------------


def _issued(lib: Lib) -> None:
    """The same account and path as the finalize cases, with a good CSR: one certificate
    (so "nothing was issued" above counts something that can move)."""
    order = lib.acme.finalize_order(ready(lib, "issued.lab.test"), deadline())
    assert order.fullchain_pem and order.fullchain_pem.startswith("-----BEGIN CERTIFICATE")


def _replayed_nonce_retried(lib: Lib) -> None:
    """One spent nonce: the server says badNonce, the library fetches a fresh nonce from
    newNonce and sends the request again, once, and it goes through."""
    spent = spend_a_nonce(lib)
    lib.net._nonces.clear()
    lib.net._nonces.add(spent)  # type: ignore[arg-type]
    seen = len(lib.net.responses)
    order = lib.acme.new_order(csr_pem(["replay-ok.lab.test"]))
    assert order.body.status == messages.STATUS_PENDING
    first, head, second = lib.net.responses[seen:seen + 3]
    assert_problem(first, "badNonce", 400)
    assert (head.request.method, head.status_code) == ("HEAD", 200)
    assert (second.request.method, second.status_code) == ("POST", 201)


def _cn_only_from_openssl(lib: Lib) -> None:
    """RFC 8555 7.4: "Identifiers of type "dns" MUST appear either in the commonName
    portion of the requested subject name or in an extensionRequest attribute [RFC2985]
    requesting a subjectAltName extension, or both". A CSR as ``openssl req -subj /CN=``
    writes it (no subjectAltName), ordered and finalized by the library: the certificate
    names the CN in its subjectAltName (CA/B Forum BRs 7.1.2.7.12) and keeps it as CN."""
    name = f"cn-only-{secrets.token_hex(4)}.lab.test"
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp, "key.pem")
        key_file.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
        made = subprocess.run([require_peer("openssl", "openssl"), "req", "-new", "-key", str(key_file),
                               "-subj", f"/CN={name}", "-outform", "PEM"],
                              capture_output=True, check=True)
    csr = x509.load_pem_x509_csr(made.stdout)
    with pytest.raises(x509.ExtensionNotFound):
        csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    order = lib.acme.finalize_order(ready(lib, csr=made.stdout), deadline())
    assert order.fullchain_pem
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    cn = leaf.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == [name]


def _cn_and_san_make_the_order(lib: Lib) -> None:
    """The CN one identifier, the subjectAltName the other: both in the certificate's
    subjectAltName."""
    name = f"cn-san-{secrets.token_hex(4)}.lab.test"
    other = f"1.{name}"
    order = ready(lib, name, other).update(csr_pem=cn_csr_pem(name, [other]))
    order = lib.acme.finalize_order(order, deadline())
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted([name, other])


# name -> (run, certificates it issues)
OK: dict[str, tuple[Callable[[Lib], None], int]] = {
    "ok/issued-through-the-library": (_issued, 1),
    "ok/replayed-nonce-retried-once": (_replayed_nonce_retried, 0),
    "ok/cn-only-csr-from-openssl": (_cn_only_from_openssl, 1),
    "ok/cn-and-san-make-the-order": (_cn_and_san_make_the_order, 1),
}


@pytest.mark.parametrize("case", list(OK))
def test_ok(world: World, lib: Lib, case: str) -> None:
    run, issued = OK[case]
    before = len(world.stored())
    run(lib)
    assert len(world.stored()) == before + issued
    assert len([c for c in world.stored() if c.requester == lib.requester]) == issued
