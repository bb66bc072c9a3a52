"""ACME Renewal Information (RFC 9773) as real clients use it.

- certbot 5.x from PyPI (Debian's certbot 2.1 knows nothing of ARI), in a virtualenv
  these tests build once under ``.peers/certbot5``: ``certbot renew`` reads our
  renewalInfo and renews exactly when the window says so;
- the ``acme`` library's ``ClientV2.renewal_time``, the call certbot makes and our agent
  will make;
- the window arithmetic itself, in-process with a fake clock.

How certbot 5 decides (``certbot/_internal/renewal.py``: ``should_autorenew``,
``_ari_renewal_time``): unless the lineage's renewal configuration holds an
``ari_retry_after`` still in the future, it calls ``ClientV2.renewal_time``, which
fetches renewalInfo and picks a uniformly random moment inside the suggested window,
and it stores now + our Retry-After as ``ari_retry_after``. If that moment has passed
it renews at once. Otherwise it asks OCSP (revoked: renew), then applies
``renew_before_expiry`` if the lineage sets one, and 2/3 of the lifetime only when
ARI gave no moment at all (skipped or failed). So a fresh certificate whose window is
ahead is "not due" because ARI says so, and a revoked one, or one whose window has
passed, is renewed because ARI says so before OCSP is ever asked; while
``ari_retry_after`` holds, a revocation reaches certbot through our OCSP responder.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime as dt
import functools
import json
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from starlette.applications import Starlette

from certwright.acme.app import acme_server
from certwright.ca import datadir
from certwright.ca.revocation import Reason
from certwright.ca.service import CertificateAuthority, Issued
from certwright.clock import FakeClock
from tests.challtestsrv import ChallTestSrv, challtestsrv
from tests.cli import run
from tests.helpers import csr, request
from tests.served import Served, free_ports, openssl, serving

pytestmark = pytest.mark.peer("pebble-challtestsrv", "curl", "certbot5")

REPO = Path(__file__).resolve().parents[2]
CLIENT_TIMEOUT = 120  # seconds for one certbot run; they take a few

# Profiles this module adds (copies of tls-server that allow loopback validation):
AHEAD = "ari-ahead"  # window from 1/2 to 3/4 of the lifetime: a fresh certificate waits
PASSED = "ari-passed"  # window that closed before the certificate was even issued
# Of 90 days from a notBefore backdated by an hour: 13 to 26 minutes after notBefore,
# so the window closed about half an hour before the certificate was issued.
PASSED_WINDOW = (0.0001, 0.0002)


# -- one server for the module -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class World:
    served: Served
    chall: ChallTestSrv
    http01_port: int

    def directory(self, profile: str) -> str:
        return f"{self.served.https}/acme/{profile}/directory"

    def https(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=self.served.root_pem),
                            trust_env=False, timeout=30)


def _configure(data: Path, *, resolver: str, http01: int) -> None:
    path = data / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["acme"].update(dns_resolver=resolver, http01_port=http01, timeout="5s")
    profiles = doc["profiles"]
    base = copy.deepcopy(profiles["tls-server"])
    base["protocols"] = ["acme"]
    base["acme"]["validation_networks"].append("127.0.0.0/8")
    ahead, passed = copy.deepcopy(base), copy.deepcopy(base)
    ahead["acme"].update(renewal_window_start=0.5, renewal_window_end=0.75)
    passed["acme"].update(renewal_window_start=PASSED_WINDOW[0],
                          renewal_window_end=PASSED_WINDOW[1])
    profiles.update({AHEAD: ahead, PASSED: passed})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("acme-ari")
    (http01,) = free_ports(1)
    with challtestsrv(base, http01=False, tlsalpn01=False) as chall:
        configure = functools.partial(_configure, resolver=chall.resolver, http01=http01)
        with serving(base, configure) as served:
            yield World(served, chall, http01)


# -- renewalInfo as we see it --------------------------------------------------------------


def cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER
    INTEGER contents), unpadded."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    n = cert.serial_number
    serial = n.to_bytes(n.bit_length() // 8 + 1, "big")  # room for the sign bit

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    return f"{b64(aki.key_identifier)}.{b64(serial)}"


@dataclasses.dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    retry_after: int


def window(world: World, profile: str, cert: x509.Certificate) -> Window:
    url = f"{world.served.https}/acme/{profile}/renewal-info/{cert_id(cert)}"
    with world.https() as http:
        r = http.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    w = r.json()["suggestedWindow"]
    got = Window(dt.datetime.fromisoformat(w["start"]), dt.datetime.fromisoformat(w["end"]),
                 int(r.headers["Retry-After"]))
    assert got.start < got.end, w  # RFC 9773 4.2: servers MUST NOT serve end <= start
    return got


def stored(world: World) -> dict[str, dict[str, Any]]:
    proc = run("certs", "list", "--json", "--data", str(world.served.data), check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {r["serial"]: r for r in rows}


def serial_of(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


# -- certbot 5 -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lineage:
    """One certbot configuration directory holding one certificate lineage."""

    prog: Path
    home: Path
    name: str
    profile: str

    @property
    def live(self) -> Path:
        return self.home / "config" / "live" / self.name

    @property
    def renewal_conf(self) -> Path:
        return self.home / "config" / "renewal" / f"{self.name}.conf"

    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.live / "cert.pem").read_bytes())

    def log(self) -> str:
        """certbot's debug log of its latest run (certbot 5 appends every run to one
        file; each starts by logging its version)."""
        text = (self.home / "logs" / "letsencrypt.log").read_text()
        start = text.rfind(":certbot._internal.main:certbot version: ")
        assert start >= 0, text
        return text[text.rfind("\n", 0, start) + 1:]


def _certbot(world: World, lineage: Lineage, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["REQUESTS_CA_BUNDLE"] = str(world.served.root_pem)  # trust our root, nothing else
    home = lineage.home
    return subprocess.run(
        [str(lineage.prog), *args, "--non-interactive", "--config-dir", str(home / "config"),
         "--work-dir", str(home / "work"), "--logs-dir", str(home / "logs")],
        env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False,
        stdin=subprocess.DEVNULL)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def certonly(world: World, prog: Path, home: Path, name: str, profile: str) -> Lineage:
    """certbot certonly --standalone (http-01 on the port our validator connects to)."""
    lineage = Lineage(prog, home, name, profile)
    got = _certbot(world, lineage, "certonly", "--server", world.directory(profile),
                   "--agree-tos", "--email", "ari@certwright.test", "--standalone",
                   "--http-01-address", "127.0.0.1", "--http-01-port",
                   str(world.http01_port), "-d", name)
    assert got.returncode == 0, _output(got)
    cert = lineage.cert()
    assert serial_of(cert) in stored(world)
    return lineage


def renew(world: World, lineage: Lineage) -> subprocess.CompletedProcess[str]:
    """``certbot renew`` as cron runs it: the lineage's stored server and authenticator."""
    proc = _certbot(world, lineage, "renew", "--no-random-sleep-on-renew")
    assert proc.returncode == 0, _output(proc)
    return proc


def ari_fetches(world: World, lineage: Lineage, cert: x509.Certificate) -> int:
    """How often certbot's latest run fetched renewalInfo for ``cert`` (acme.client logs
    every request)."""
    url = f"{world.served.https}/acme/{lineage.profile}/renewal-info/{cert_id(cert)}"
    return lineage.log().count(f"Sending GET request to {url}.")


def ari_retry_after(lineage: Lineage) -> dt.datetime | None:
    """The ``ari_retry_after`` certbot stored in the renewal configuration (naive local
    time, as acme.client computes it)."""
    found = re.search(r"^ari_retry_after = (\S+)$", lineage.renewal_conf.read_text(), re.M)
    return dt.datetime.fromisoformat(found.group(1)) if found else None


NOT_DUE = "Certificate not yet due for renewal"
DUE = "Certificate is due for renewal, auto-renewing"
ARI_SKIPPED = "Skipped ACME Renewal Info check because ari_retry_after"
OCSP_REVOKED = "Should renew, certificate is revoked."
OCSP = "certbot._internal.ocsp"  # the logger of certbot's OCSP check


def assert_renewed(world: World, lineage: Lineage, old: x509.Certificate
                   ) -> x509.Certificate:
    """The lineage now holds a new certificate (new serial, same name) that verifies with
    the chain certbot saved and is stored unrevoked under the lineage's profile."""
    new = lineage.cert()
    assert new.serial_number != old.serial_number
    live = lineage.live
    proc = openssl("verify", "-CAfile", str(world.served.root_pem), "-untrusted",
                   str(live / "chain.pem"), str(live / "cert.pem"))
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc
    san = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [lineage.name]
    record = stored(world)[serial_of(new)]
    assert record["revoked_at"] is None and record["profile"] == lineage.profile
    assert record["protocol"] == "acme"
    return new


def test_ok_certbot5_waits_while_the_window_is_ahead(world: World, certbot5: Path,
                                                      tmp_path: Path) -> None:
    lineage = certonly(world, certbot5, tmp_path, "ahead.ari.test", AHEAD)
    cert = lineage.cert()
    w = window(world, AHEAD, cert)
    assert dt.datetime.now(dt.UTC) < w.start

    # certbot asks ARI, is told to wait, and stores when it may ask again.
    proc = renew(world, lineage)
    assert ari_fetches(world, lineage, cert) == 1, lineage.log()
    assert NOT_DUE in proc.stdout + proc.stderr, _output(proc)
    assert DUE not in lineage.log()
    assert lineage.cert() == cert
    retry = ari_retry_after(lineage)
    expected = dt.datetime.now() + dt.timedelta(seconds=w.retry_after)
    assert retry is not None and abs(retry - expected) < dt.timedelta(minutes=2), retry

    # Within our Retry-After certbot does not ask again (RFC 9773 4.3.2).
    proc = renew(world, lineage)
    assert ARI_SKIPPED in lineage.log()
    assert ari_fetches(world, lineage, cert) == 0
    assert NOT_DUE in proc.stdout + proc.stderr, _output(proc)
    assert lineage.cert() == cert

    # Revoked within that Retry-After: ARI stays skipped, and certbot's OCSP check,
    # answered by our responder, renews instead.
    run("certs", "revoke", serial_of(cert), "--data", str(world.served.data),
        "--reason", "superseded", check=True)
    renew(world, lineage)
    log = lineage.log()
    assert ARI_SKIPPED in log and ari_fetches(world, lineage, cert) == 0
    assert OCSP_REVOKED in log and DUE in log, log
    new = assert_renewed(world, lineage, cert)
    assert window(world, AHEAD, new).start > dt.datetime.now(dt.UTC)


def test_ok_certbot5_renews_a_revoked_certificate_because_ari_says_so(
        world: World, certbot5: Path, tmp_path: Path) -> None:
    lineage = certonly(world, certbot5, tmp_path, "revoked.ari.test", AHEAD)
    old = lineage.cert()
    assert window(world, AHEAD, old).start > dt.datetime.now(dt.UTC)
    revoked = run("certs", "revoke", serial_of(old), "--data", str(world.served.data),
                  "--reason", "keyCompromise", check=True)
    assert f"revoked {serial_of(old)}" in revoked.stdout
    # The revoked certificate's window moved into the past.
    assert window(world, AHEAD, old).end <= dt.datetime.now(dt.UTC)

    renew(world, lineage)
    log = lineage.log()
    assert ari_fetches(world, lineage, old) == 1, log
    assert DUE in log, log
    # ARI decided: certbot renews on ARI's word before it would ask OCSP.
    assert OCSP not in log, log
    new = assert_renewed(world, lineage, old)
    assert window(world, AHEAD, new).start > dt.datetime.now(dt.UTC)
    assert stored(world)[serial_of(old)]["revocation_reason"] == "keyCompromise"


def test_ok_certbot5_renews_when_the_window_has_passed(world: World, certbot5: Path,
                                                       tmp_path: Path) -> None:
    lineage = certonly(world, certbot5, tmp_path, "passed.ari.test", PASSED)
    old = lineage.cert()
    now = dt.datetime.now(dt.UTC)
    w = window(world, PASSED, old)
    assert w.end < now
    # Without ARI certbot would wait until 2/3 of the lifetime.
    life = old.not_valid_after_utc - old.not_valid_before_utc
    assert old.not_valid_before_utc + life * 2 / 3 > now

    renew(world, lineage)
    log = lineage.log()
    assert ari_fetches(world, lineage, old) == 1, log
    assert DUE in log and OCSP not in log, log
    assert_renewed(world, lineage, old)
    assert stored(world)[serial_of(old)]["revoked_at"] is None


# -- the acme library's renewal_time -------------------------------------------------------


@pytest.fixture
def acme_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """requests (under acme.client) trusts our root through REQUESTS_CA_BUNDLE, and
    talks to loopback directly."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(world.served.root_pem))
    for k in list(os.environ):
        if k.lower().endswith("_proxy"):
            monkeypatch.delenv(k)


def acme_account(world: World, profile: str) -> client.ClientV2:
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=ES256, user_agent="certwright-tests")
    acme = client.ClientV2(client.ClientV2.get_directory(world.directory(profile), net), net)
    acme.new_account(messages.NewRegistration.from_data(email="agent@certwright.test",
                                                        terms_of_service_agreed=True))
    return acme


def acme_issue(world: World, acme: client.ClientV2, name: str) -> bytes:
    """Order a certificate for ``name``, proving it with dns-01 (the TXT record set at
    challtestsrv, which our validator asks); return the leaf in PEM."""
    private = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    order = acme.new_order(crypto_util.make_csr(private, [name]))
    for authz in order.authorizations:
        (challb,) = [c for c in authz.body.challenges
                     if isinstance(c.chall, challenges.DNS01)]
        response, validation = challb.response_and_validation(acme.net.key)
        world.chall.set_txt(challb.validation_domain_name(name), validation)
        acme.answer_challenge(challb, response)
    order = acme.poll_and_finalize(
        order, deadline=dt.datetime.now() + dt.timedelta(seconds=60))
    assert order.fullchain_pem is not None
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    return leaf.public_bytes(serialization.Encoding.PEM)


def test_ok_acme_renewal_time_inside_our_window_then_now_once_revoked(
        world: World, acme_env: None) -> None:
    acme = acme_account(world, AHEAD)
    pem = acme_issue(world, acme, "library.ari.test")
    cert = x509.load_pem_x509_certificate(pem)
    w = window(world, AHEAD, cert)
    assert dt.datetime.now(dt.UTC) < w.start

    # A random moment inside the window each time (RFC 9773 4.3.1), and the next time
    # to ask is our Retry-After from now.
    for _ in range(8):
        at, retry = acme.renewal_time(pem)
        asked = dt.datetime.now()
        assert at is not None and w.start <= at <= w.end, (at, w)
        assert abs(retry - (asked + dt.timedelta(seconds=w.retry_after))
                   ) < dt.timedelta(seconds=30), retry

    acme.revoke(cert, 1)  # keyCompromise, by the account that ordered it
    assert stored(world)[serial_of(cert)]["revocation_reason"] == "keyCompromise"
    now = dt.datetime.now(dt.UTC)
    at, _ = acme.renewal_time(pem)
    assert at is not None and at <= now + dt.timedelta(seconds=1), (at, now)


# -- the window arithmetic, in-process with a fake clock -----------------------------------

NARROW = "narrow-window"  # a window 1% of the lifetime wide, from 1/2


@dataclasses.dataclass
class Local:
    ca: CertificateAuthority
    clock: FakeClock
    app: Starlette

    def issue(self, name: str, profile: str, life: dt.timedelta | None
              ) -> x509.Certificate:
        """Issue for ``name``: the profile's default validity (notBefore backdated), or
        exactly ``life`` from now."""
        now = self.clock.now()
        issued = self.ca.enroll(request(csr([name]), profile, not_before=now if life else None,
                                        not_after=now + life if life else None))
        assert isinstance(issued, Issued)
        return issued.certificate

    def get(self, path: str) -> httpx.Response:
        async def get() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="https://localhost") as http:
                return await http.get(path)

        return asyncio.run(get())

    def window(self, cert: x509.Certificate) -> Window:
        # Asked under tls-server's directory: the certificate's own profile decides.
        r = self.get(f"/acme/tls-server/renewal-info/{cert_id(cert)}")
        assert r.status_code == 200, r.text
        w = r.json()["suggestedWindow"]
        got = Window(dt.datetime.fromisoformat(w["start"]),
                     dt.datetime.fromisoformat(w["end"]), int(r.headers["Retry-After"]))
        assert got.start < got.end, w  # RFC 9773 4.2
        return got


@pytest.fixture
def local(ca_dir: Path, clock: FakeClock) -> Iterator[Local]:
    path = ca_dir / "certwright.yaml"
    doc = yaml.safe_load(path.read_text())
    narrow = copy.deepcopy(doc["profiles"]["tls-server"])
    narrow["acme"].update(renewal_window_start=0.5, renewal_window_end=0.51)
    doc["profiles"][NARROW] = narrow
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with datadir.opened(ca_dir, clock=clock) as ca:
        yield Local(ca, clock, Starlette(routes=acme_server(ca).routes()))


SECOND = dt.timedelta(seconds=1)


@pytest.mark.parametrize(("profile", "life", "fractions"), [
    pytest.param("tls-server", None, (2 / 3, 5 / 6), id="ok/profile-default-90d-backdated"),
    pytest.param("tls-server", dt.timedelta(days=30), (2 / 3, 5 / 6), id="ok/30d"),
    pytest.param("tls-server", dt.timedelta(days=7), (2 / 3, 5 / 6), id="ok/7d"),
    pytest.param("tls-server", dt.timedelta(hours=6), (2 / 3, 5 / 6), id="ok/6h"),
    pytest.param("tls-server", dt.timedelta(seconds=100), (2 / 3, 5 / 6), id="ok/100s"),
    pytest.param(NARROW, dt.timedelta(days=1), (0.5, 0.51), id="ok/narrow-1d"),
    # 30 s to 30.6 s after notBefore: whole seconds must not collapse the window.
    pytest.param(NARROW, dt.timedelta(seconds=60), (0.5, 0.51), id="ok/narrow-60s-rounds-out"),
])
def test_window_is_the_profile_fraction_of_the_lifetime(
        local: Local, profile: str, life: dt.timedelta | None,
        fractions: tuple[float, float]) -> None:
    cert = local.issue("w.svc.internal", profile, life)
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if life is not None:
        assert na - nb == life
    start = nb + (na - nb) * fractions[0]
    end = nb + (na - nb) * fractions[1]
    w = local.window(cert)
    # Whole seconds, never narrower than the profile's window, never past notAfter.
    assert start - SECOND < w.start <= start and end <= w.end < end + SECOND, (w, start, end)
    assert nb <= w.start < w.end <= na
    assert w.retry_after > 0
    # The window belongs to the certificate, not to the moment it is asked for.
    local.clock.advance((na - nb) / 2)
    assert local.window(cert) == w


def test_revoked_window_is_the_hour_before_asking(local: Local) -> None:
    cert = local.issue("r.svc.internal", "tls-server", None)
    assert local.window(cert).start > local.clock.now()
    local.clock.advance(dt.timedelta(days=3))
    local.ca.revoke(serial_of(cert), Reason.key_compromise, "pytest")
    for later in (dt.timedelta(0), dt.timedelta(days=5)):
        local.clock.advance(later)
        now = local.clock.now()
        w = local.window(cert)
        assert (w.start, w.end) == (now - dt.timedelta(hours=1), now), (w, now)
