"""EST (RFC 7030) over HTTPS: a thin front-end.

Each request is parsed, its requester authenticated for the profile the path names
(an HTTP Basic bootstrap credential bound to the profile, or a TLS client certificate),
and handed to the core as one ``EnrollmentRequest``: the RA decides (issue, hold for an
operator, refuse), the Authority signs. This module only renders the outcome:

- 200 with a base64 certs-only PKCS#7 (or, for serverkeygen, multipart/mixed with the
  PKCS#8 key and the certificate);
- 202 with Retry-After while an operator has not decided; the client's retry of the same
  request (same requester, profile, operation and public key) finds the held request
  and gets the certificate once approved, a 403 with the reason once rejected;
- 400 bad body, 401 (with WWW-Authenticate) missing or wrong credentials, 403 a policy
  refusal with the RA's reason, 404 unknown label or operation, 415 wrong media type;
  never internal detail.

Paths: /.well-known/est/<operation> and /.well-known/est/<label>/<operation>. Without a
label the profile is the requester's own: the one a credential is bound to, the one the
renewed certificate was issued under, or the one whose trust anchor issued the client
certificate; cacerts and csrattrs without a label describe ``default_profile``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AttributeOID
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from certwright.ca.policy import EnrollmentRequest, Requester
from certwright.ca.profiles import Approval, Profile, Protocol
from certwright.ca.service import CertificateAuthority, Held, Issued
from certwright.errors import CertwrightError, ErrorKind, config_error
from certwright.est import wire
from certwright.est.credentials import VerifiedCache, seal_key, unseal_key
from certwright.est.state import Credential, EstState, HeldRequest
from certwright.pki import csr as csrlib
from certwright.pki import keygen
from certwright.server.app import AsgiEndpoint, read_body
from certwright.store.repo import CertificateRecord, format_serial

__all__ = ["EstServer", "load_anchors"]

log = logging.getLogger("certwright.est")

PREFIX = "/.well-known/est"
REALM = 'Basic realm="certwright EST"'
ENROLL, REENROLL, KEYGEN = "simpleenroll", "simplereenroll", "serverkeygen"
_GETS = ("cacerts", "csrattrs")
_POSTS = (ENROLL, REENROLL, KEYGEN)
_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
HANDLER_THREADS = 32  # requests handled at once (each holds a thread while it runs)

_SHA256 = hashes.SHA256()

_STATUS = {
    ErrorKind.MALFORMED: 400,
    ErrorKind.BAD_CSR: 400,
    ErrorKind.BAD_PUBLIC_KEY: 403,
    ErrorKind.REJECTED_IDENTIFIER: 403,
    ErrorKind.POLICY: 403,
    ErrorKind.UNAUTHORIZED: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
}


class EstError(Exception):
    """An answer decided by the front-end itself (not by the core)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def unauthenticated(detail: str) -> EstError:
    # RFC 7030 3.2.3 / RFC 9110 11.6.1: a 401 names the scheme the client may answer with.
    return EstError(401, detail, {"WWW-Authenticate": REALM})


@dataclasses.dataclass(frozen=True)
class Ctx:
    """One EST request as the handlers see it."""

    operation: str
    label: str | None
    authorization: str
    content_type: str
    body: bytes
    tls: dict[str, Any] | None  # the "certwright.tls" scope extension (server/tls.py)
    client: str


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    media_type: str | None = "text/plain; charset=utf-8"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who asks, as established for one profile."""

    profile: str
    requester: Requester
    credential: Credential | None = None
    password: str | None = None  # seals a server-generated key while its request is held
    renews: x509.Certificate | None = None  # simplereenroll: the certificate presented
    # False for a spent one-time or an expired credential: it may still collect the
    # outcome of a request it made while it was good, but make no new one.
    may_request: bool = True


def text(status: int, detail: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, (detail.rstrip("\n") + "\n").encode(), headers=headers or {})


def load_anchors(ca: CertificateAuthority) -> dict[str, tuple[x509.Certificate, ...]]:
    """Each EST profile's client_trust_anchors, read from the data directory."""
    root = Path(ca.layout.root) if ca.layout is not None else Path.cwd()
    anchors: dict[str, tuple[x509.Certificate, ...]] = {}
    for name, profile in ca.config.profiles.items():
        certs: list[x509.Certificate] = []
        for path in profile.est.client_trust_anchors:
            full = path if path.is_absolute() else root / path
            try:
                certs += x509.load_pem_x509_certificates(full.read_bytes())
            except (OSError, ValueError) as e:
                raise config_error(f"profiles.{name}.est.client_trust_anchors: {full}: "
                                   f"cannot load PEM certificates: {e}") from None
        anchors[name] = tuple(certs)
    return anchors


def _spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _basic(header: str) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic Authorization header (RFC 7617), or None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ("", "")  # present but unreadable: a wrong credential, not a missing one
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else ("", "")


def _directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class EstServer:
    def __init__(self, ca: CertificateAuthority, state: EstState,
                 anchors: dict[str, tuple[x509.Certificate, ...]]) -> None:
        self.ca = ca
        self.state = state
        self.clock = ca.clock
        self.anchors = anchors
        self.passwords = VerifiedCache()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Certificate fingerprint -> the profiles whose trust anchors issued it.
        self._anchor_profiles: dict[str, tuple[str, ...]] = {}
        config = ca.config
        self.labels = {config.est_label(name): name for name, p in config.profiles.items()
                       if Protocol.EST in p.protocols}
        # RFC 7030 4.1.3: the current root and the chain; the same for every label.
        self.cacerts = wire.certs_only([*ca.chain, ca.root])
        self.csrattrs = {name: wire.b64_lines(wire.csr_attributes(config.profiles[name]))
                         for name in self.labels.values()}

    # -- routing --------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The front-end for a Starlette application (tests). The server dispatches
        ``/.well-known/est/`` to ``asgi`` directly (``server/app.py`` PrefixDispatch)."""
        return [Route(PREFIX + "/{rest:path}", AsgiEndpoint(self.asgi), methods=_METHODS)]

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request under ``/.well-known/est/``, as a plain ASGI application."""
        status, headers, body = await self._answer(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive
                      ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        method = scope["method"]
        path = scope["path"]
        parts = path[len(PREFIX) + 1:].split("/") if path.startswith(PREFIX + "/") else []
        op = parts[-1] if 1 <= len(parts) <= 2 else ""
        label = parts[0] if len(parts) == 2 else None
        try:
            if not op or (label is not None and not label):
                raise EstError(404, "not an EST path: /.well-known/est/[label/]operation")
            if op not in _GETS and op not in _POSTS:
                raise EstError(404, f"{op!r} is not an EST operation this server offers")
            allowed = "GET" if op in _GETS else "POST"
            if method != allowed and not (allowed == "GET" and method == "HEAD"):
                raise EstError(405, f"use {allowed} for {op}", {"Allow": allowed})
            if op == "cacerts":
                self._profile_of_label(label)
                reply = Reply(200, self.cacerts, wire.CERTS_ONLY,
                              {"Content-Transfer-Encoding": "base64"})
            elif op == "csrattrs":
                name = self._profile_of_label(label) or self._default_profile()
                reply = Reply(200, self.csrattrs[name], wire.CSRATTRS,
                              {"Content-Transfer-Encoding": "base64"})
            else:
                scope_ext = scope.get("extensions") or {}
                client = scope["client"][0] if scope.get("client") else "-"
                authorization = content_type = ""
                for key, value in scope["headers"]:
                    if key == b"authorization":
                        authorization = value.decode("latin-1")
                    elif key == b"content-type":
                        content_type = value.decode("latin-1")
                ctx = Ctx(op, label, authorization, content_type, await read_body(receive),
                          scope_ext.get("certwright.tls"), client)
                reply = await self._in_thread(self.handle, ctx)
        except EstError as e:
            reply = text(e.status, e.detail, e.headers)
        except CertwrightError as e:
            reply = self.render_error(e)
        except Exception:
            log.exception("EST request %s %s failed", method, path)
            reply = text(500, "the server could not process the request")
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in reply.headers.items()]
        if reply.media_type is not None:
            headers.append((b"content-type", reply.media_type.encode("latin-1")))
        headers.append((b"content-length", str(len(reply.body)).encode()))
        return reply.status, headers, reply.body

    async def _in_thread(self, fn: Callable[[Ctx], Reply], ctx: Ctx) -> Reply:
        """Blocking work (the store, scrypt, signing) on this server's threads; made on
        first use, so that a worker process forked after start-up has its own."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=HANDLER_THREADS, thread_name_prefix="est")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, ctx)

    @staticmethod
    def render_error(e: CertwrightError) -> Reply:
        status = _STATUS.get(e.kind)
        if status is None:
            log.error("EST request failed: %s", e)
            return text(500, "the server could not process the request")
        return text(status, str(e))

    def _profile_of_label(self, label: str | None) -> str | None:
        if label is None:
            return None
        name = self.labels.get(label)
        if name is None:
            raise EstError(404, f"no EST profile is labelled {label!r}")
        return name

    def _default_profile(self) -> str:
        name = self.ca.config.default_profile
        if name not in self.labels.values():
            raise EstError(404, f"the default profile {name!r} does not accept EST; "
                           "name a profile in the path")
        return name

    # -- enrollment -----------------------------------------------------------------------

    def handle(self, ctx: Ctx) -> Reply:
        try:
            return self._enroll(ctx)
        except EstError as e:
            return text(e.status, e.detail, e.headers)
        except CertwrightError as e:
            return self.render_error(e)

    def _enroll(self, ctx: Ctx) -> Reply:
        # Authentication first: what is wrong with a body is told only to a requester
        # who may send one.
        who = self.authenticate(ctx, self._profile_of_label(ctx.label))
        if wire.media_type(ctx.content_type) != wire.PKCS10:
            raise EstError(415, f"Content-Type must be {wire.PKCS10}")
        csr = csrlib.load(ctx.body)
        profile = self.ca.config.profiles[who.profile]
        if profile.est.tls_unique_pop:
            self._check_pop(ctx, csr)
        spki = _spki_sha256(csr.public_key())
        manual = profile.approval is Approval.MANUAL
        if manual:
            # Only a profile that holds requests has any for a retry to find (one switched
            # to automatic approval since issues at once, as its policy now says).
            held = self.state.held(who.profile, str(who.requester), spki, ctx.operation)
            if held is not None:
                return self._collect(held, who, profile)
        if not who.may_request:
            raise self._spent_or_expired(who)
        request, key_der = self._request(ctx, who, profile, csr)
        one_time = who.credential is not None and who.credential.one_time
        if not manual and not one_time:
            # The common case writes nothing but the certificate and its audit record, in
            # the Authority's own transaction.
            return self._submit(request, key_der, who, profile, spki, ctx.operation)
        # A request that may be held, or spends a one-time credential, is one unit of work:
        # the credential spent, the request held and the row its retry will find commit
        # together (on SQLite with what the core wrote), and concurrent first attempts
        # are settled one after the other.
        answer: Exception | None = None
        with self.ca.store.unit():
            try:
                reply = self._in_unit(request, key_der, who, profile, spki, ctx.operation)
            except (EstError, CertwrightError) as e:
                answer = e  # an answer, not a failure: what the request did is committed
        if answer is not None:
            raise answer
        return reply

    def _in_unit(self, request: EnrollmentRequest, key_der: bytes | None, who: Principal,
                 profile: Profile, spki: str, operation: str) -> Reply:
        if profile.approval is Approval.MANUAL:
            held = self.state.held(who.profile, str(who.requester), spki, operation)
            if held is not None:  # a concurrent first attempt was held a moment ago
                return self._collect(held, who, profile)
        spent_at = None
        if who.credential is not None and who.credential.one_time:
            spent_at = self.state.spend(who.credential.name)
            if spent_at is None:
                raise unauthenticated(f"EST credential {who.credential.name!r} has been used")
        try:
            return self._submit(request, key_der, who, profile, spki, operation)
        except CertwrightError:
            # Refused: the credential is given back (the refusal itself is audited).
            if spent_at is not None:
                assert who.credential is not None
                self.state.unspend(who.credential.name, spent_at)
            raise

    @staticmethod
    def _spent_or_expired(who: Principal) -> EstError:
        assert who.credential is not None
        used = who.credential.one_time and who.credential.used_at is not None
        return unauthenticated(f"EST credential {who.credential.name!r} "
                               + ("has been used" if used else "has expired"))

    def _request(self, ctx: Ctx, who: Principal, profile: Profile,
                 csr: x509.CertificateSigningRequest
                 ) -> tuple[EnrollmentRequest, bytes | None]:
        """The EnrollmentRequest, and for serverkeygen the PKCS#8 key it was made for (the
        key is made here, before any lock is taken: an RSA key takes a while)."""
        key_der: bytes | None = None
        if ctx.operation == KEYGEN:
            if profile.approval is Approval.MANUAL and who.password is None:
                # The key would have to wait in the store for the operator; it is kept
                # there only sealed under the requester's password.
                raise EstError(403, "serverkeygen on a profile with manual approval needs "
                               "an HTTP Basic credential")
            private_key = keygen.key_like(csr.public_key(), profile.keys)
            key_der = private_key.private_bytes(serialization.Encoding.DER,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())
            csr = keygen.request_over(csr, private_key)
        return EnrollmentRequest(profile=who.profile, csr=csr, requester=who.requester,
                                 protocol=Protocol.EST, renews=who.renews,
                                 server_keygen=key_der is not None), key_der

    def _submit(self, request: EnrollmentRequest, key_der: bytes | None, who: Principal,
                profile: Profile, spki: str, operation: str) -> Reply:
        outcome = self.ca.enroll(request)
        if isinstance(outcome, Held):
            sealed = (seal_key(key_der, who.password, outcome.request_id)
                      if key_der is not None and who.password is not None else None)
            self.state.hold(outcome.request_id, profile=who.profile,
                            requester=str(who.requester), spki_sha256=spki,
                            operation=operation, wrapped_key=sealed)
            return self._pending(outcome.request_id, outcome.reason, profile)
        assert isinstance(outcome, Issued)
        return self._issued(outcome.certificate, key_der)

    def _issued(self, cert: x509.Certificate, key_der: bytes | None) -> Reply:
        if key_der is not None:
            body, ctype = wire.serverkeygen_multipart(key_der, cert)
            return Reply(200, body, ctype)
        # RFC 7030 4.2.3: the answer holds only the certificate that was issued.
        return Reply(200, wire.certs_only([cert]), wire.CERTS_ONLY,
                     {"Content-Transfer-Encoding": "base64"})

    @staticmethod
    def _pending(request_id: str, reason: str, profile: Profile) -> Reply:
        seconds = int(profile.est.retry_after.total_seconds())
        # RFC 7030 4.2.3: 202 and Retry-After; the client repeats the same request.
        return text(202, f"request {request_id} is pending: {reason}; repeat this request "
                    f"after {seconds} s", {"Retry-After": str(seconds)})

    def _collect(self, held: HeldRequest, who: Principal, profile: Profile) -> Reply:
        """Answer a repeated request from its held request's state."""
        record = self.ca.store.request(held.request_id)
        if record.state == "pending":
            return self._pending(record.id, record.reason or "awaiting an operator", profile)
        if record.state == "rejected":
            self.state.collected(held.request_id)
            raise EstError(403, f"request {record.id} was rejected: "
                           f"{record.reason or 'rejected by an operator'}")
        assert record.state == "issued" and record.serial is not None
        cert = x509.load_der_x509_certificate(self.ca.store.certificate(record.serial).der)
        key_der = None
        if held.operation == KEYGEN:
            if held.wrapped_key is None or who.password is None:
                raise EstError(403, "the generated key can be collected only with the "
                               "credential that asked for it")
            key_der = unseal_key(held.wrapped_key, who.password, held.request_id)
        self.state.collected(held.request_id)
        return self._issued(cert, key_der)

    def _check_pop(self, ctx: Ctx, csr: x509.CertificateSigningRequest) -> None:
        """RFC 7030 3.5: the CSR's challengePassword is the base64 of the tls-unique value
        of the TLS session it was sent in, so a CSR cannot be relayed from another
        session. tls-unique (RFC 5929) exists only up to TLS 1.2; for TLS 1.3, RFC 9266
        defines tls-exporter, which Python's ssl module does not expose (it has no
        SSL_export_keying_material), so this check cannot be made under TLS 1.3 and a
        profile that requires it refuses TLS 1.3 requests."""
        tls = ctx.tls or {}
        binding = tls.get("tls_unique")
        if tls.get("version") != "TLSv1.2" or not binding:
            raise EstError(400, "this profile binds the CSR to the TLS session with "
                           "tls-unique (RFC 7030 3.5), which exists only in TLS 1.2: "
                           "connect with TLS 1.2")
        try:
            value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
        except x509.AttributeNotFound:
            raise EstError(400, "the CSR must carry this TLS session's tls-unique value, "
                           "base64, as its challengePassword (RFC 7030 3.5)") from None
        if not hmac.compare_digest(bytes(value).strip(), base64.b64encode(binding)):
            raise EstError(400, "the CSR's challengePassword is not this TLS session's "
                           "tls-unique value (RFC 7030 3.5)")

    # -- authentication ------------------------------------------------------------------

    def authenticate(self, ctx: Ctx, labelled: str | None) -> Principal:
        """Who is asking, for which profile; raises EstError 401/403."""
        der = (ctx.tls or {}).get("client_cert_der")
        cert = x509.load_der_x509_certificate(der) if der else None
        if ctx.operation == REENROLL:
            return self._renewer(cert, labelled)
        basic = _basic(ctx.authorization) if ctx.authorization else None
        if basic is not None:
            return self._password(basic[0], basic[1], labelled, ctx.client)
        if cert is not None:
            return self._anchored(cert, labelled, ctx.client)
        raise unauthenticated("authentication required: an EST credential (HTTP Basic) or "
                              "a client certificate this profile trusts")

    def _fail(self, reason: str, name: str, profile: str | None, client: str) -> None:
        """Record a failed authentication in the audit log."""
        self.ca.store.audit("est.auth.failed", actor=f"est-client:{client}", subject=name,
                            at=self.clock.now(),
                            data={"reason": reason, "profile": profile, "client": client})

    def _password(self, name: str, password: str, labelled: str | None,
                  client: str) -> Principal:
        # Outside any unit of work: a first check costs a scrypt, and no lock is held.
        cred = self.state.credential(name) if name else None
        if not self.passwords.check(name, cred.secret if cred else None, password):
            self._fail("unknown credential" if cred is None else "wrong password", name,
                       labelled, client)
            # One answer for an unknown name and a wrong password (and the same work).
            raise unauthenticated("wrong EST credential name or password")
        assert cred is not None
        profile = labelled or cred.profile
        if cred.profile != profile:
            self._fail("credential of another profile", name, profile, client)
            raise EstError(403, f"EST credential {name!r} is not for profile {profile!r}")
        if profile not in self.labels.values():
            raise EstError(403, f"profile {profile!r} does not accept EST requests")
        if not self.ca.config.profiles[profile].est.basic_auth:
            self._fail("profile takes no passwords", name, profile, client)
            raise EstError(403, f"profile {profile!r} does not accept EST credentials")
        now = self.clock.now()
        return Principal(profile, Requester("est-credential", name), cred, password,
                         may_request=not cred.spent() and not cred.expired(now))

    def _valid_now(self, cert: x509.Certificate) -> bool:
        now = self.clock.now()
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc

    def _anchored(self, cert: x509.Certificate, labelled: str | None,
                  client: str) -> Principal:
        """simpleenroll with a certificate from a CA a profile names as a trust anchor
        (an IDevID from the manufacturer's CA, say). The TLS layer verified the chain
        against the union of every profile's anchors; this picks the profiles whose own
        anchors issued it."""
        fingerprint = cert.fingerprint(_SHA256).hex()
        issued_under = self._anchor_profiles.get(fingerprint)
        if issued_under is None:
            # Signature checks, once per certificate while it stays in this cache.
            issued_under = tuple(
                p for p in self.labels.values()
                if any(_directly_issued_by(cert, a) for a in self.anchors.get(p, ())))
            if len(self._anchor_profiles) >= 4096:
                self._anchor_profiles.clear()
            self._anchor_profiles[fingerprint] = issued_under
        trusting = [p for p in issued_under if labelled is None or p == labelled]
        if not trusting or not self._valid_now(cert):
            self._fail("client certificate not trusted", f"sha256:{fingerprint}", labelled,
                       client)
            raise unauthenticated("the client certificate is not from a trust anchor of "
                                  "this profile; give an EST credential instead")
        if len(trusting) > 1:
            raise EstError(400, "several profiles trust this client certificate: name one "
                           "in the path (/.well-known/est/<label>/...)")
        return Principal(trusting[0], Requester("est-certificate", f"sha256:{fingerprint}"))

    def _renewer(self, cert: x509.Certificate | None, labelled: str | None) -> Principal:
        """RFC 7030 4.2.2 / 3.3.2: simplereenroll is authenticated by the certificate
        being renewed, presented as the TLS client certificate; it must be one this CA
        issued, current and not revoked, under the profile asked for."""
        if cert is None:
            raise EstError(403, "simplereenroll needs the certificate being renewed as "
                           "the TLS client certificate")
        record = self._our_record(cert)
        if record is None:
            raise EstError(403, "simplereenroll renews certificates this CA issued; the "
                           "client certificate is not one of them")
        if record.revoked:
            raise EstError(403, f"certificate {record.serial} is revoked")
        if not self._valid_now(cert):
            raise EstError(403, f"certificate {record.serial} is not valid now")
        profile = labelled or record.profile
        if record.profile != profile:
            raise EstError(403, f"certificate {record.serial} was issued under profile "
                           f"{record.profile!r}, not {profile!r}")
        if profile not in self.labels.values():
            raise EstError(403, f"profile {profile!r} does not accept EST requests")
        return Principal(profile, Requester("est-certificate", record.serial), renews=cert)

    def _our_record(self, cert: x509.Certificate) -> CertificateRecord | None:
        """The store's record of ``cert`` if this CA issued it. The SHA-256 of the whole
        certificate matching the one we stored proves it; verifying the CA's signature
        again (the TLS layer did) would only cost an ECDSA verification per request."""
        record = self.ca.store.find_certificate(format_serial(cert.serial_number))
        if record is None or record.issuer != self.ca.authority.issuer_id or (
                record.fingerprint != cert.fingerprint(_SHA256).hex()):
            return None
        return record
