"""The agent's protocol clients: ACME through certbot's ``acme`` library (RFC 8555, with
http-01 standalone or webroot, tls-alpn-01 on our own listener (``agent.tlsalpn``) and
dns-01 through RFC 2136 updates (``agent.rfc2136``) or a hook command; ARI, RFC 9773,
when the directory offers it) and EST through httpx (RFC 7030: Basic or mutual TLS, 202 polling,
simplereenroll with the current certificate).

Each returns the leaf and the chain as the CA sent them; nothing here checks them (that is
``agent.verify``) or writes the certificate (``agent.install``). The certificate's
private key is never passed in: the clients see only the CSR.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
from acme import challenges, client, errors, messages, standalone
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from certwright.agent import rfc2136, tlsalpn
from certwright.agent.hooks import run_hook
from certwright.agent.spec import AcmeIssuer, EstIssuer, Issuer
from certwright.agent.state import State
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki.keys import write_secret_file

log = logging.getLogger("certwright.agent")

USER_AGENT = "certwright-agent"
ORDER_DEADLINE = dt.timedelta(seconds=120)
MAX_RETRY_AFTER = 300.0  # seconds: never trust a server to park us longer per poll


@dataclasses.dataclass(frozen=True)
class Obtained:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    account: str | None
    details: dict[str, Any]


class IssuerClient(Protocol):
    def obtain(self, csr: x509.CertificateSigningRequest, names: list[str],
               current: tuple[Path, Path] | None) -> Obtained:
        """``current``: the live (key file, certificate file), for protocols that
        authenticate a renewal with the certificate being replaced."""
        ...

    def renewal_time(self, cert: x509.Certificate
                     ) -> tuple[dt.datetime | None, dt.datetime | None]:
        """ARI: (when to renew, when to ask again); (None, None) when not offered."""
        ...


def issuer_error(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.INTERNAL, detail, rule="issuer")


def _split_chain(pem: bytes) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    certs = x509.load_pem_x509_certificates(pem)
    return certs[0], tuple(certs[1:])


# -- ACME -----------------------------------------------------------------------------------


def _acme_message(e: BaseException) -> str:
    if isinstance(e, messages.Error):
        return f"{e.typ}: {e.detail}" if e.detail else str(e.typ)
    if isinstance(e, errors.ValidationError):
        return "validation failed: " + "; ".join(
            f"{a.body.identifier.value}: {_challenge_error(a)}" for a in e.failed_authzrs)
    return f"{type(e).__name__}: {e}"


def _challenge_error(authzr: messages.AuthorizationResource) -> str:
    for c in authzr.body.challenges:
        if c.error is not None:
            return _acme_message(c.error)
    return str(authzr.body.status)


class AcmeClient:
    def __init__(self, spec: AcmeIssuer, state: State, profile: str | None = None) -> None:
        self.spec = spec
        self.state = state
        self.profile = profile
        self._client: client.ClientV2 | None = None
        self.account_uri: str | None = None

    def _verify(self) -> bool | str:
        return str(self.spec.tls_trust) if self.spec.tls_trust else True

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        directory_url = self.spec.directory
        saved = self.state.account(directory_url)
        if saved is not None and saved.key_file.exists():
            key = serialization.load_pem_private_key(saved.key_file.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            saved = None
        jwk = JWKEC(key=key)
        # requests takes a CA bundle path where the annotation says bool.
        net = client.ClientNetwork(jwk, alg=ES256, verify_ssl=self._verify(),  # type: ignore[arg-type]
                                   user_agent=USER_AGENT, timeout=30)
        try:
            directory = client.ClientV2.get_directory(directory_url, net)
            acme = client.ClientV2(directory, net)
            if saved is not None:
                net.account = messages.RegistrationResource(
                    body=messages.Registration(), uri=saved.uri)
                self.account_uri = saved.uri
            else:
                self.account_uri = self._register(acme, net, key)
        except (errors.Error, messages.Error, OSError, ValueError) as e:
            raise issuer_error(f"ACME {directory_url}: {_acme_message(e)}") from None
        except Exception as e:  # requests' exceptions: connection refused, TLS...
            raise issuer_error(f"ACME {directory_url}: {type(e).__name__}: {e}") from None
        self._client = acme
        return acme

    def _register(self, acme: client.ClientV2, net: client.ClientNetwork,
                  key: ec.EllipticCurvePrivateKey) -> str:
        eab = None
        if self.spec.eab is not None:
            hmac = self.spec.eab.hmac_key_file.read_text().strip()
            assert net.key is not None
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=net.key.public_key(), kid=self.spec.eab.kid,
                hmac_key=hmac, directory=acme.directory)
        reg = messages.NewRegistration(contact=self.spec.contact,
                                       terms_of_service_agreed=True,
                                       external_account_binding=eab)
        regr = acme.new_account(reg)
        accounts = self.state.directory / "accounts"
        with contextlib.suppress(FileExistsError):
            accounts.mkdir(mode=0o700)
        name = hashlib.sha256(self.spec.directory.encode()).hexdigest()[:24] + ".key"
        write_secret_file(accounts / name, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.state.save_account(self.spec.directory, regr.uri, accounts / name,
                                dt.datetime.now(dt.UTC))
        log.info("registered ACME account %s", regr.uri)
        return str(regr.uri)

    def obtain(self, csr: x509.CertificateSigningRequest, names: list[str],
               current: tuple[Path, Path] | None) -> Obtained:
        acme = self._connect()
        csr_pem = csr.public_bytes(serialization.Encoding.PEM)
        try:
            profile = self.profile if self.profile in _profiles(acme) else None
            order = acme.new_order(csr_pem, profile=profile)
            with self._solve(acme, order):
                order = _poll_and_finalize(acme, order)
        except CertwrightError:
            raise
        except (errors.Error, messages.Error) as e:
            raise issuer_error(f"ACME {self.spec.directory}: {_acme_message(e)}") from None
        except Exception as e:
            raise issuer_error(f"ACME {self.spec.directory}: {type(e).__name__}: {e}"
                               ) from None
        if order.fullchain_pem is None:
            raise issuer_error(f"ACME {self.spec.directory}: the order has no certificate")
        leaf, chain = _split_chain(order.fullchain_pem.encode())
        return Obtained(leaf, chain, self.account_uri,
                        {"order": order.uri, "challenge": self.spec.challenge.method})

    @contextlib.contextmanager
    def _solve(self, acme: client.ClientV2, order: messages.OrderResource) -> Iterator[None]:
        """Put every pending authorization's response in place, answer the challenges,
        and take the responses down afterwards."""
        spec = self.spec.challenge
        want: type[challenges.Challenge] = (
            challenges.HTTP01 if spec.http_01 is not None
            else tlsalpn.TLSALPN01 if spec.tls_alpn_01 is not None else challenges.DNS01)
        todo: list[tuple[messages.ChallengeBody, str, str]] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            found = [c for c in authz.body.challenges if isinstance(c.chall, want)]
            ident = authz.body.identifier
            if not found:
                raise issuer_error(
                    f"ACME: the server offers no {want.typ} challenge for {ident.value}")
            todo.append((found[0], ident.typ.name, ident.value))
        key = acme.net.key
        with contextlib.ExitStack() as stack:
            if spec.http_01 is not None and spec.http_01.standalone is not None:
                resources = set()
                for challb, _, _ in todo:
                    response, validation = challb.response_and_validation(key)
                    resources.add(standalone.HTTP01RequestHandler.HTTP01Resource(
                        chall=challb.chall, response=response, validation=validation))
                if todo:
                    stack.enter_context(_http01_listener(spec.http_01.standalone, resources))
            elif spec.http_01 is not None and spec.http_01.webroot is not None:
                for challb, _, _ in todo:
                    _, validation = challb.response_and_validation(key)
                    stack.enter_context(_webroot_file(spec.http_01.webroot,
                                                      challb.chall.encode("token"), validation))
            elif spec.tls_alpn_01 is not None:
                answers = {(typ, value): challb.chall.validation(key)
                           for challb, typ, value in todo}
                if answers:
                    stack.enter_context(tlsalpn.responding(spec.tls_alpn_01.standalone,
                                                           answers))
            elif spec.dns_01 is not None:
                for challb, _, value in todo:
                    _, validation = challb.response_and_validation(key)
                    fqdn = challb.validation_domain_name(value.removeprefix("*."))
                    if spec.dns_01.rfc2136 is not None:
                        stack.enter_context(rfc2136.record(spec.dns_01.rfc2136, fqdn,
                                                           validation))
                    else:
                        assert spec.dns_01.hook is not None
                        stack.enter_context(_dns_record(spec.dns_01.hook, fqdn, validation))
                if todo and spec.dns_01.propagation:
                    time.sleep(spec.dns_01.propagation.total_seconds())
            for challb, _, _ in todo:
                acme.answer_challenge(challb, challb.response(key))
            yield

    def renewal_time(self, cert: x509.Certificate
                     ) -> tuple[dt.datetime | None, dt.datetime | None]:
        if not self.spec.ari:
            return None, None
        acme = self._connect()
        try:
            acme.directory["renewalInfo"]
        except KeyError:  # Pebble 2.4, for one: fall back to the lifetime rule
            return None, None
        pem = cert.public_bytes(serialization.Encoding.PEM)
        try:
            at, retry = acme.renewal_time(pem)
        except errors.ARIError as e:
            log.warning("ACME renewalInfo: %s", e)
            return None, _aware(e.retry_after)
        return (None if at is None else _aware(at)), _aware(retry)


POLL_FIRST = 0.1  # seconds before the first look at a pending authorization or order
POLL_MAX = 5.0  # the longest wait between two looks when the server gives no Retry-After


def _next_poll(response: Any, delay: float) -> float:
    """RFC 8555 7.5.1/7.4: wait what Retry-After asks (at most MAX_RETRY_AFTER), else
    twice the previous wait, up to POLL_MAX."""
    value = response.headers.get("Retry-After")
    if value is not None and value.strip().isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    return min(delay * 2, POLL_MAX)


def _poll_and_finalize(acme: client.ClientV2, order: messages.OrderResource
                       ) -> messages.OrderResource:
    """The library's poll_and_finalize sleeps a fixed second before each look, which makes
    every enrollment last two seconds or more against a CA that validates in
    milliseconds; this looks after POLL_FIRST, then backs off (or follows Retry-After)."""
    deadline = time.monotonic() + ORDER_DEADLINE.total_seconds()

    def wait(delay: float) -> None:
        if time.monotonic() + delay > deadline:
            raise errors.TimeoutError()
        time.sleep(delay)

    done = []
    for authzr in order.authorizations:
        delay = POLL_FIRST
        while authzr.body.status in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
            wait(delay)
            authzr, response = acme.poll(authzr)
            delay = _next_poll(response, delay)
        done.append(authzr)
    failed = [a for a in done if a.body.status != messages.STATUS_VALID]
    if failed:
        raise errors.ValidationError(failed)
    order = acme.begin_finalization(order.update(authorizations=done))
    delay = POLL_FIRST
    while True:
        body = order.body
        if body.status == messages.STATUS_INVALID:
            if body.error is not None:
                raise errors.IssuanceError(body.error)
            raise errors.Error("the order became invalid; the server said nothing more")
        if body.status == messages.STATUS_VALID and body.certificate is not None:
            # POST-as-GET (RFC 8555 6.3); the library has no public call for a URL.
            cert = acme._post_as_get(body.certificate)
            issued: messages.OrderResource = order.update(fullchain_pem=cert.text)
            return issued
        wait(delay)
        response = acme._post_as_get(order.uri)
        order = order.update(body=messages.Order.from_json(response.json()))
        delay = _next_poll(response, delay)


def _aware(t: dt.datetime) -> dt.datetime:
    # The acme library mixes naive local times (its "now") with aware ones (the server's).
    return t.astimezone(dt.UTC)


def _profiles(acme: client.ClientV2) -> dict[str, Any]:
    meta = acme.directory.meta
    profiles = getattr(meta, "profiles", None)
    return dict(profiles) if profiles else {}


@contextlib.contextmanager
def _http01_listener(listen: str, resources: set[Any]) -> Iterator[None]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        server = standalone.HTTP01Server((host, int(port)), resources, ipv6=":" in host)
    except OSError as e:
        raise CertwrightError(ErrorKind.CONFIG, f"http-01 standalone {listen}: {e.strerror}",
                              rule="issuer.acme.challenge") from None
    thread = threading.Thread(target=server.serve_forever, name="http-01", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def _webroot_file(webroot: Path, token: str, validation: str) -> Iterator[None]:
    directory = webroot / ".well-known" / "acme-challenge"
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = directory / token
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(validation)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _dns_record(hook: Any, fqdn: str, value: str) -> Iterator[None]:
    """``hook present FQDN VALUE`` before, ``hook cleanup FQDN VALUE`` after."""
    env = {"CERTWRIGHT_DNS01_FQDN": fqdn, "CERTWRIGHT_DNS01_VALUE": value}
    cmd = hook.model_copy(update={"run": (*hook.run, "present", fqdn, value)})
    run_hook("dns-01", cmd, env)
    try:
        yield
    finally:
        cleanup = hook.model_copy(update={"run": (*hook.run, "cleanup", fqdn, value)})
        try:
            run_hook("dns-01", cleanup, env)
        except CertwrightError as e:
            log.warning("%s", e)


# -- EST ------------------------------------------------------------------------------------


def _pkcs7_certs(body: bytes, what: str) -> list[x509.Certificate]:
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        return list(pkcs7.load_der_pkcs7_certificates(der))
    except ValueError:
        raise issuer_error(f"EST {what}: the answer is not base64 PKCS#7 certs-only") from None


class EstClient:
    """RFC 7030 simpleenroll / simplereenroll, and cacerts for the chain."""

    def __init__(self, spec: EstIssuer, *, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.sleep = sleep
        self.monotonic = monotonic

    @property
    def base(self) -> str:
        return f"{self.spec.url}/.well-known/est" + (
            f"/{self.spec.label}" if self.spec.label else "")

    def _http(self, client_cert: tuple[str, str] | None) -> httpx.Client:
        ctx = ssl.create_default_context(
            cafile=str(self.spec.tls_trust) if self.spec.tls_trust else None)
        if client_cert is not None:
            ctx.load_cert_chain(*client_cert)
        auth: httpx.BasicAuth | None = None
        if self.spec.username is not None and self.spec.password_file is not None:
            password = self.spec.password_file.read_text().strip()
            auth = httpx.BasicAuth(self.spec.username, password)
        return httpx.Client(verify=ctx, auth=auth, timeout=30, trust_env=False,
                            headers={"User-Agent": USER_AGENT})

    def obtain(self, csr: x509.CertificateSigningRequest, names: list[str],
               current: tuple[Path, Path] | None) -> Obtained:
        # RFC 7030 4.2.2: a renewal is authenticated with the certificate it replaces.
        if current is not None and self.spec.client_cert is None:
            op, cert_auth = "simplereenroll", (str(current[1]), str(current[0]))
        elif self.spec.client_cert is not None and self.spec.client_key is not None:
            op, cert_auth = "simpleenroll", (str(self.spec.client_cert),
                                             str(self.spec.client_key))
        else:
            op, cert_auth = "simpleenroll", None
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        url = f"{self.base}/{op}"
        deadline = self.monotonic() + self.spec.pending_timeout.total_seconds()
        try:
            with self._http(cert_auth) as http:
                while True:
                    r = http.post(url, content=body, headers={
                        "Content-Type": "application/pkcs10",
                        "Content-Transfer-Encoding": "base64"})
                    if r.status_code != 202:
                        break
                    # RFC 7030 4.2.3: 202 and Retry-After: ask again with the same request.
                    wait = _retry_after(r.headers.get("Retry-After"))
                    if self.monotonic() + wait > deadline:
                        raise issuer_error(
                            f"EST {url}: still pending after "
                            f"{self.spec.pending_timeout.total_seconds():g} s (manual approval?)")
                    log.info("EST request pending; asking again in %g s", wait)
                    self.sleep(wait)
                if r.status_code != 200:
                    detail = r.text.strip()[:200] if r.headers.get(
                        "Content-Type", "").startswith("text/") else ""
                    raise issuer_error(f"EST {url}: HTTP {r.status_code}"
                                       + (f": {detail}" if detail else ""))
                issued = _pkcs7_certs(r.content, op)
                cacerts = http.get(f"{self.base}/cacerts")
                cas = _pkcs7_certs(cacerts.content, "cacerts") \
                    if cacerts.status_code == 200 else []
        except httpx.HTTPError as e:
            raise issuer_error(f"EST {url}: {type(e).__name__}: {e}") from None
        except ssl.SSLError as e:
            raise issuer_error(f"EST {url}: {e}") from None
        want = csr.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        leaves = [c for c in issued if c.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == want]
        leaf = leaves[0] if leaves else issued[0] if issued else None
        if leaf is None:
            raise issuer_error(f"EST {url}: the answer holds no certificate")
        # The chain the service sends: intermediates, not the self-signed root.
        others = [c for c in issued + cas if c != leaf and c.issuer != c.subject]
        chain = tuple(dict.fromkeys(others))
        return Obtained(leaf, chain, self.spec.username or (
            str(self.spec.client_cert) if self.spec.client_cert else None),
            {"operation": op})

    def renewal_time(self, cert: x509.Certificate
                     ) -> tuple[dt.datetime | None, dt.datetime | None]:
        return None, None


def _retry_after(value: str | None) -> float:
    if value is None:
        return 60.0
    try:
        return min(max(float(value), 1.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
        return min(max((when - dt.datetime.now(dt.UTC)).total_seconds(), 1.0),
                   MAX_RETRY_AFTER)
    except (TypeError, ValueError):
        return 60.0


def client_for(issuer: Issuer, state: State) -> IssuerClient:
    if issuer.acme is not None:
        return AcmeClient(issuer.acme, state, issuer.profile)
    assert issuer.est is not None
    return EstClient(issuer.est)
