"""EST pieces on their own: passwords and sealing, wire encodings, profile settings, the
RA's renewal and serverkeygen rules, and the front-end in process with a fake clock
(credential expiry, one-time credentials, held requests). Real peers over real TLS are
in test_est_interop.py."""

from __future__ import annotations

import ast
import asyncio
import base64
import concurrent.futures
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from pyasn1.codec.der import decoder
from pyasn1_alt_modules import rfc7030

import certwright.est
from certwright.ca import credentials, policy
from certwright.ca.policy import Issue, Pending, Reject
from certwright.ca.profiles import Profile, parse_config_text, profile_model
from certwright.ca.service import CertificateAuthority, Issued
from certwright.clock import FakeClock
from certwright.errors import CertwrightError, ErrorKind
from certwright.est import config as estconfig
from certwright.est import wire
from certwright.est.app import est_routes
from certwright.est.enroll import SEAL_CONTEXT
from certwright.server.app import build_https_app
from certwright.store.schema import UtcDateTime
from tests.helpers import csr, key, request

# -- passwords ------------------------------------------------------------------------------


def test_ok_password_hash_is_salted_scrypt() -> None:
    password = credentials.new_secret()
    assert len(password) >= 32
    one, two = credentials.hash_secret(password), credentials.hash_secret(password)
    assert one != two and one.startswith("scrypt$16384$8$1$") and password not in one
    assert credentials.verify_secret(password, one)
    assert credentials.verify_secret(password, two)


@pytest.mark.parametrize(("case", "stored", "given"), [
    ("fail/wrong-password", "hash-of:right", "wrong"),
    ("fail/unknown-user", None, "right"),
    ("fail/corrupt-hash", "scrypt$x$y", "right"),
    ("fail/other-scheme", "md5$1$1$1$AAAA$AAAA", "right"),
])
def test_fail_password_check(case: str, stored: str | None, given: str) -> None:
    if stored == "hash-of:right":
        stored = credentials.hash_secret("right")
    assert credentials.verify_secret(given, stored) is False


def test_ok_verified_cache_remembers_only_the_right_password() -> None:
    cache = credentials.VerifiedCache()
    stored = credentials.hash_secret("right")
    assert cache.check("a", stored, "right")
    assert cache.check("a", stored, "right")  # from the cache
    assert not cache.check("a", stored, "wrong")
    assert not cache.check("a", None, "right")  # the credential is gone
    # A credential re-created under the same name has a new hash: no stale entry matches.
    assert not cache.check("a", credentials.hash_secret("other"), "right")


def test_ok_sealed_key_opens_only_with_the_password_and_request() -> None:
    sealed = credentials.seal(b"pkcs8 bytes", "pw", context=SEAL_CONTEXT, bound_to="req1")
    assert b"pkcs8 bytes" not in sealed
    assert credentials.unseal(sealed, "pw", context=SEAL_CONTEXT, bound_to="req1") == b"pkcs8 bytes"
    for password, request_id in (("other", "req1"), ("pw", "req2")):
        with pytest.raises(CertwrightError) as e:
            credentials.unseal(sealed, password, context=SEAL_CONTEXT,
                               bound_to=request_id)
        assert e.value.kind is ErrorKind.UNAUTHORIZED


@pytest.mark.parametrize("name", ["device001", "a.b-c_d@e", "x" * 64])
def test_ok_credential_names(name: str) -> None:
    assert credentials.check_name(name) == name


@pytest.mark.parametrize("name", ["", "a:b", "-a", "a b", "x" * 65, "é"])
def test_fail_credential_names(name: str) -> None:
    with pytest.raises(CertwrightError):
        credentials.check_name(name)


# -- wire -------------------------------------------------------------------------------------


def test_ok_certs_only_is_wrapped_base64_of_degenerate_signed_data(
        ca: CertificateAuthority) -> None:
    body = wire.certs_only([ca.chain[0], ca.root])
    lines = body.decode().splitlines()
    assert all(len(line) <= 64 for line in lines) and body.endswith(b"\n")
    certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
    assert set(certs) == {ca.chain[0], ca.root}


def _attrs(profile: Profile) -> list[tuple[str, list[str]]]:
    decoded, rest = decoder.decode(wire.csr_attributes(profile), asn1Spec=rfc7030.CsrAttrs())
    assert rest == b""
    out = []
    for item in decoded:
        if item.getName() == "oid":
            out.append((str(item["oid"]), []))
        else:
            attr = item["attribute"]
            values = [decoder.decode(bytes(v))[0].prettyPrint() for v in attr["attrValues"]]
            out.append((str(attr["attrType"]), values))
    return out


def test_ok_csr_attributes_follow_the_profile() -> None:
    p = profile_model().model_validate({"keys": {"rsa": False, "ecdsa_curves": ["P-256"],
                                         "ed25519": True},
                                "est": {"tls_unique_pop": True}})
    assert _attrs(p) == [
        (wire.OID_CHALLENGE_PASSWORD, []),
        (wire.OID_EC_PUBLIC_KEY, [wire.CURVE_OIDS["P-256"]]),
        (wire.OID_ED25519, []),
        (wire.OID_EXTENSION_REQUEST, [wire.OID_SUBJECT_ALT_NAME]),
    ]
    rsa_only = profile_model().model_validate({"keys": {"ecdsa_curves": [], "rsa_min_bits": 3072}})
    assert _attrs(rsa_only) == [(wire.OID_RSA_ENCRYPTION, ["3072"]),
                                (wire.OID_EXTENSION_REQUEST, [wire.OID_SUBJECT_ALT_NAME])]


def test_ok_media_type_ignores_parameters_and_case() -> None:
    assert wire.media_type(" Application/PKCS10 ; charset=x") == "application/pkcs10"
    assert wire.media_type("") == ""


# -- profile settings -------------------------------------------------------------------------

BASE = "default_profile: a\nprofiles:\n  a:\n    protocols: [est]\n"


@pytest.mark.parametrize(("case", "text", "expected"), [
    ("fail/label-two-segments", BASE + "    est: {label: 'x/y'}\n", "est.label: 'x/y'"),
    ("fail/label-is-operation", BASE + "    est: {label: simpleenroll}\n",
     "'simpleenroll' is an EST operation name"),
    ("fail/profile-name-is-operation",
     "default_profile: cacerts\nprofiles:\n  cacerts:\n    protocols: [est]\n",
     "the EST label 'cacerts' is an EST operation name; set est.label"),
    ("fail/duplicate-label", BASE + "  b:\n    protocols: [est]\n    est: {label: a}\n",
     "profiles.b: EST label 'a' is taken by profile 'a'"),
    ("fail/retry-after", BASE + "    est: {retry_after: 0s}\n", "must be between 1s and 1d"),
    ("fail/typo", BASE + "    est: {server_keygen: true}\n",
     "unknown key (did you mean 'serverkeygen'?)"),
])
def test_fail_est_settings(case: str, text: str, expected: str) -> None:
    with pytest.raises(CertwrightError) as e:
        parse_config_text(text, "cw.yaml")
    assert expected in str(e.value), (case, str(e.value))


def test_ok_est_label_defaults_to_profile_name() -> None:
    config = parse_config_text(BASE + "  b:\n    protocols: [est]\n    est: {label: bee}\n"
                               "  c:\n    est: {label: a}\n", "cw.yaml")
    assert (estconfig.label(config, "a"), estconfig.label(config, "b")) == ("a", "bee")


# -- the RA's rules for renewal and server-side key generation ---------------------------------


def _renewed(ca: CertificateAuthority, names: list[str]) -> x509.Certificate:
    out = ca.enroll(request(csr(names, cn=names[0]), profile="tls-client"))
    assert isinstance(out, Issued)
    return out.certificate


def test_ok_renewal_with_the_same_names_and_a_new_key(ca: CertificateAuthority) -> None:
    old = _renewed(ca, ["r.internal"])
    decision = policy.decide(ca.config, request(csr(["r.internal"], cn="r.internal"),
                             profile="tls-client", protocol="est", renews=old),
                             ca.clock.now())
    assert isinstance(decision, Issue)


@pytest.mark.parametrize(("case", "names", "cn"), [
    ("fail/other-name", ["s.internal"], "s.internal"),
    ("fail/extra-name", ["r.internal", "s.internal"], "r.internal"),
    ("fail/no-cn", ["r.internal"], None),
])
def test_fail_renewal_changing_names(ca: CertificateAuthority, case: str, names: list[str],
                                     cn: str | None) -> None:
    old = _renewed(ca, ["r.internal"])
    req = request(csr(names, cn=cn), profile="tls-client", protocol="est", renews=old)
    decision = policy.decide(ca.config, req, ca.clock.now())
    assert isinstance(decision, Reject), case
    assert decision.error.rule == "renewal_may_change_names"
    assert decision.error.kind is ErrorKind.REJECTED_IDENTIFIER


def test_ok_renewal_changes_where_the_profile_allows_them(ca: CertificateAuthority) -> None:
    old = _renewed(ca, ["r.internal"])
    profile = ca.config.profiles["tls-client"]
    relaxed = profile.model_copy(update={"renewal_may_change_names": True})
    config = ca.config.model_copy(update={"profiles": {**ca.config.profiles,
                                                       "tls-client": relaxed}})
    req = request(csr(["s.internal"]), profile="tls-client", protocol="est", renews=old)
    assert isinstance(policy.decide(config, req, ca.clock.now()), Issue)


def test_fail_server_keygen_where_the_profile_forbids_it(ca: CertificateAuthority) -> None:
    refused = policy.decide(ca.config, request(csr(["k.internal"]), protocol="est",
                                               server_keygen=True), ca.clock.now())
    assert isinstance(refused, Reject) and refused.error.rule == "server_keygen"
    held = policy.decide(ca.config, request(csr(["k.devices.internal"]), profile="device",
                                            protocol="est", server_keygen=True),
                         ca.clock.now())
    assert isinstance(held, Pending)  # allowed, and device needs an operator


# -- the front-end in process, with a fake clock ------------------------------------------------


class InProcess:
    """The HTTPS app without a listener (no TLS: Basic credentials only)."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.app = build_https_app(ca, mounts=est_routes(ca))

    def post(self, path: str, body: bytes, auth: tuple[str, str]) -> httpx.Response:
        async def post() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="https://localhost") as http:
                return await http.post(f"/.well-known/est/{path}", content=body, auth=auth,
                                       headers={"Content-Type": "application/pkcs10"})

        return asyncio.run(post())


@pytest.fixture
def est(ca: CertificateAuthority) -> InProcess:
    return InProcess(ca)


def _post(client: InProcess, user: str, password: str, c: x509.CertificateSigningRequest,
          path: str = "simpleenroll") -> tuple[int, str]:
    body = base64.encodebytes(c.public_bytes(serialization.Encoding.DER))
    r = client.post(path, body, (user, password))
    return r.status_code, r.text


def test_fail_credential_after_its_expiry(ca: CertificateAuthority, clock: FakeClock,
                                          est: InProcess) -> None:
    state = ca.credentials("est")
    _, password = state.create("exp", "tls-client", actor="tester",
                                       expires_at=clock.now() + dt.timedelta(hours=1))
    assert _post(est, "exp", password, csr(["a.internal"]))[0] == 200
    clock.advance(dt.timedelta(hours=1))
    status, text = _post(est, "exp", password, csr(["b.internal"]))
    assert (status, text) == (401, "EST credential 'exp' has expired\n")


def test_ok_one_time_credential_collects_its_held_request(
        ca: CertificateAuthority, clock: FakeClock, est: InProcess) -> None:
    state = ca.credentials("est")
    _, password = state.create("once", "device", actor="tester", one_time=True)
    request_csr = csr(["d1.devices.internal"])
    first = _post(est, "once", password, request_csr)
    assert first[0] == 202, first
    assert _post(est, "once", password, request_csr)[0] == 202  # a retry, not a new request
    # A new request (another key) is refused: the credential is spent.
    assert _post(est, "once", password, csr(["d2.devices.internal"]))[0] == 401
    ca.approve(first[1].split()[1], "tester")
    status, _ = _post(est, "once", password, request_csr)
    assert status == 200
    # Collected: the credential has nothing left to do.
    assert _post(est, "once", password, request_csr)[0] == 401
    assert len(ca.store.requests("pending")) == 0


def test_ok_refused_request_does_not_spend_a_one_time_credential(
        ca: CertificateAuthority, clock: FakeClock, est: InProcess) -> None:
    state = ca.credentials("est")
    _, password = state.create("once", "tls-client", actor="tester", one_time=True)
    assert _post(est, "once", password, csr(["www.example.com"]))[0] == 403
    assert _post(est, "once", password, csr(["ok.internal"]))[0] == 200
    assert _post(est, "once", password, csr(["ok2.internal"]))[0] == 401
    spent = state.get("once")
    assert spent is not None and spent.spent()


def test_ok_spend_is_won_once(ca: CertificateAuthority, clock: FakeClock) -> None:
    state = ca.credentials("est")
    state.create("once", "tls-client", actor="tester", one_time=True)
    first = state.spend("once")
    assert first is not None and state.spend("once") is None
    state.unspend("once", first)
    assert state.spend("once") is not None


def test_ok_removed_credential_authenticates_nothing(
        ca: CertificateAuthority, clock: FakeClock, est: InProcess) -> None:
    state = ca.credentials("est")
    _, password = state.create("gone", "tls-client", actor="tester")
    assert _post(est, "gone", password, csr(["a.internal"]))[0] == 200  # now cached
    state.remove("gone", actor="tester")
    assert _post(est, "gone", password, csr(["b.internal"]))[0] == 401


def test_ok_serverkeygen_key_type_follows_the_csr(ca: CertificateAuthority, clock: FakeClock,
                                                  est: InProcess) -> None:
    _, password = ca.credentials("est").create("kg", "device", actor="tester")
    # device allows Ed25519; a P-384 CSR key gives a P-384 key; the request is held.
    status, text = _post(est, "kg", password, csr(["k.devices.internal"],
                                                  private_key=key("p384")), "serverkeygen")
    assert status == 202, text
    held = ca.store.requests("pending")[-1]
    generated = x509.load_der_x509_csr(held.csr).public_key()
    assert isinstance(generated, ec.EllipticCurvePublicKey)
    assert generated.curve.name == "secp384r1"


def _at_once(n: int, fn: Callable[[int], tuple[int, str]]) -> list[tuple[int, str]]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def test_ok_one_time_credential_races_issue_one_certificate(
        ca: CertificateAuthority, clock: FakeClock, est: InProcess) -> None:
    _, password = ca.credentials("est").create("race", "tls-client", actor="tester",
                                                           one_time=True)
    before = ca.store.count_certificates()
    got = _at_once(8, lambda i: _post(est, "race", password, csr([f"r{i}.internal"])))
    assert sorted(s for s, _ in got) == [200] + [401] * 7, got
    assert ca.store.count_certificates() == before + 1


def test_ok_concurrent_first_attempts_hold_one_request(
        ca: CertificateAuthority, clock: FakeClock, est: InProcess) -> None:
    _, password = ca.credentials("est").create("dup", "device", actor="tester")
    same = csr(["dup.devices.internal"])
    got = _at_once(6, lambda i: _post(est, "dup", password, same))
    assert {s for s, _ in got} == {202}, got
    assert len({t.split()[1] for _, t in got}) == 1  # one request id for all of them
    assert len(ca.store.requests("pending")) == 1


# -- the core's credentials and the seam ----------------------------------------------------


def test_ok_credential_create_and_remove_are_audited(ca: CertificateAuthority) -> None:
    est = ca.credentials("est")
    est.create("audited", "tls-client", actor="alice", one_time=True)
    with pytest.raises(CertwrightError) as e:
        est.create("audited", "device", actor="alice")
    assert e.value.kind is ErrorKind.CONFLICT
    assert str(e.value) == "an EST credential named 'audited' exists already"
    # Another protocol's credential of the same name is another credential.
    assert ca.credentials("scep").get("audited") is None
    est.remove("audited", actor="bob")
    with pytest.raises(CertwrightError) as e:
        est.remove("audited", actor="bob")
    assert (e.value.kind, str(e.value)) == (ErrorKind.NOT_FOUND,
                                            "no EST credential named 'audited'")
    events = [(r.event, r.actor, r.subject, r.data) for r in ca.store.iter_audit()
              if r.event.startswith("est.credential.")]
    assert [(ev, actor, subject) for ev, actor, subject, _ in events] == [
        ("est.credential.created", "alice", "audited"),
        ("est.credential.removed", "bob", "audited")]
    assert '"one_time":true' in events[0][3] and '"profile":"tls-client"' in events[0][3]


def test_ok_est_credential_of_schema_0006_enrolls_after_migration(
        ca: CertificateAuthority, est: InProcess) -> None:
    """A password made before migration 0007 (stored in est_credentials, as 0005 made
    it) authenticates a simpleenroll afterwards."""
    with ca.store.engine.connect() as conn, conn.begin():
        command.downgrade(ca.store._alembic(conn), "0006")
    password = credentials.new_secret()
    with ca.store.engine.connect() as conn, conn.begin():
        conn.execute(sa.text(
            "INSERT INTO est_credentials (name, profile, secret, one_time, expires_at, "
            "used_at, created_at) VALUES ('old-device', 'tls-client', :s, :o, NULL, NULL, :c)"
        ).bindparams(sa.bindparam("o", type_=sa.Boolean),
                     sa.bindparam("c", type_=UtcDateTime())),
            {"s": credentials.hash_secret(password), "o": False, "c": ca.clock.now()})
    ca.store.migrate()
    status, text = _post(est, "old-device", password, csr(["old.internal"]))
    assert status == 200, text
    assert _post(est, "old-device", "wrong", csr(["old.internal"]))[0] == 401


def test_ok_est_reaches_the_core_only_through_its_ports() -> None:
    """No module of the EST front-end imports the store or SQLAlchemy, or reaches the
    CertificateAuthority's store or Authority (issue 10: one seam for every front-end)."""
    package = Path(certwright.est.__file__).parent
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("certwright.store", "sqlalchemy")), (path, name)
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"store", "authority"}, (path, node.lineno)
