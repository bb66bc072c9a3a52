"""EST enrollment (RFC 7030 4.2, 4.4): simpleenroll, simplereenroll and serverkeygen.

A request is authenticated, parsed, and handed to the core as one ``EnrollmentRequest``:
the RA decides (issue, hold for an operator, refuse), the Authority signs. This module
renders the outcome:

- 200 with a base64 certs-only PKCS#7 (or, for serverkeygen, multipart/mixed with the
  PKCS#8 key and the certificate);
- 202 with Retry-After while an operator has not decided; the client's retry of the same
  request (same requester, profile, operation and public key: the transaction id) finds
  the held request and gets the certificate once approved, a 403 with the reason once
  rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AttributeOID

from certwright.ca.credentials import seal, unseal
from certwright.ca.policy import EnrollmentRequest
from certwright.ca.profiles import Approval, Profile
from certwright.ca.service import Held
from certwright.errors import CertwrightError, ErrorKind
from certwright.est import config as estconfig
from certwright.est import wire
from certwright.est.auth import Authenticator, Principal
from certwright.est.base import (
    KEYGEN,
    Ctx,
    EstError,
    Labels,
    Reply,
    render_error,
    text,
    unauthenticated,
)
from certwright.est.ports import PROTOCOL, Core
from certwright.model.transactions import Transaction
from certwright.pki import csr as csrlib
from certwright.pki import keygen

__all__ = ["Enrollment"]

# Domain separation of a held server-generated key's sealing (ca.credentials.seal); kept
# as it was when EST sealed keys itself, so keys held before the move still open.
SEAL_CONTEXT = b"certwright est serverkeygen hold v1 "


def _spki_sha256(public_key: CertificatePublicKeyTypes) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def transaction_id(operation: str, spki_sha256: str) -> str:
    """EST has no transaction id on the wire: a retry is the same request again, so the
    operation and the public key name it (with the profile and requester the core keys
    it by). Migration 0007 derived the ids of EST's earlier held requests the same way."""
    return f"{operation}/{spki_sha256}"


class Enrollment:
    def __init__(self, core: Core, labels: Labels, auth: Authenticator) -> None:
        self.core = core
        self.labels = labels
        self.auth = auth
        self.credentials = core.credentials(PROTOCOL)
        self.transactions = core.transactions(PROTOCOL)

    def handle(self, ctx: Ctx) -> Reply:
        try:
            return self._enroll(ctx)
        except (EstError, CertwrightError) as e:
            return render_error(e)

    def _enroll(self, ctx: Ctx) -> Reply:
        # Authentication first: what is wrong with a body is told only to a requester
        # who may send one.
        who = self.auth.authenticate(ctx, self.labels.profile_of(ctx.label))
        if wire.media_type(ctx.content_type) != wire.PKCS10:
            raise EstError(415, f"Content-Type must be {wire.PKCS10}")
        csr = csrlib.load(ctx.body)
        profile = self.core.config.profiles[who.profile]
        if estconfig.profile_settings(profile).tls_unique_pop:
            _check_pop(ctx, csr)
        tid = transaction_id(ctx.operation, _spki_sha256(csr.public_key()))
        manual = profile.approval is Approval.MANUAL
        if manual:
            # Only a profile that holds requests has any for a retry to find (one switched
            # to automatic approval since issues at once, as its policy now says).
            held = self.transactions.find(who.profile, str(who.requester), tid)
            if held is not None:
                return self._collect(held, who, profile)
        if not who.may_request:
            raise _spent_or_expired(who)
        request, key_der = self._request(ctx, who, profile, csr)
        one_time = who.credential is not None and who.credential.one_time
        if not manual and not one_time:
            # The common case writes nothing but the certificate and its audit record, in
            # the Authority's own transaction.
            return self._submit(request, key_der, who, profile, tid, ctx.operation)
        # A request that may be held, or spends a one-time credential, is one unit of work:
        # the credential spent, the request held and the row its retry will find commit
        # together (on SQLite with what the core wrote), and concurrent first attempts
        # are settled one after the other.
        answer: Exception | None = None
        with self.core.unit():
            try:
                reply = self._in_unit(request, key_der, who, profile, tid, ctx.operation)
            except (EstError, CertwrightError) as e:
                answer = e  # an answer, not a failure: what the request did is committed
        if answer is not None:
            raise answer
        return reply

    def _in_unit(self, request: EnrollmentRequest, key_der: bytes | None, who: Principal,
                 profile: Profile, tid: str, operation: str) -> Reply:
        if profile.approval is Approval.MANUAL:
            held = self.transactions.find(who.profile, str(who.requester), tid)
            if held is not None:  # a concurrent first attempt was held a moment ago
                return self._collect(held, who, profile)
        spent_at = None
        if who.credential is not None and who.credential.one_time:
            spent_at = self.credentials.spend(who.credential.name)
            if spent_at is None:
                raise unauthenticated(f"EST credential {who.credential.name!r} has been used")
        try:
            return self._submit(request, key_der, who, profile, tid, operation)
        except CertwrightError:
            # Refused: the credential is given back (the refusal itself is audited).
            if spent_at is not None:
                assert who.credential is not None
                self.credentials.unspend(who.credential.name, spent_at)
            raise

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
                                 protocol=PROTOCOL, renews=who.renews,
                                 server_keygen=key_der is not None), key_der

    def _submit(self, request: EnrollmentRequest, key_der: bytes | None, who: Principal,
                profile: Profile, tid: str, operation: str) -> Reply:
        outcome = self.core.enroll(request)
        if isinstance(outcome, Held):
            sealed = (seal(key_der, who.password, context=SEAL_CONTEXT,
                           bound_to=outcome.request_id)
                      if key_der is not None and who.password is not None else None)
            self.transactions.record(outcome.request_id, profile=who.profile,
                                     requester=str(who.requester), transaction_id=tid,
                                     operation=operation, sealed_key=sealed)
            return _pending(outcome.request_id, outcome.reason, profile)
        return _issued(outcome.certificate, key_der)

    def _collect(self, held: Transaction, who: Principal, profile: Profile) -> Reply:
        """Answer a repeated request from its held request's outcome."""
        try:
            outcome = self.core.outcome(held.request_id)
        except CertwrightError as e:
            if e.kind is ErrorKind.UNAUTHORIZED:  # rejected: the client has its answer
                self.transactions.collected(held.request_id)
            raise
        if isinstance(outcome, Held):
            return _pending(outcome.request_id, outcome.reason, profile)
        key_der = None
        if held.operation == KEYGEN:
            if held.sealed_key is None or who.password is None:
                raise EstError(403, "the generated key can be collected only with the "
                               "credential that asked for it")
            key_der = unseal(held.sealed_key, who.password, context=SEAL_CONTEXT,
                             bound_to=held.request_id)
        self.transactions.collected(held.request_id)
        return _issued(outcome.certificate, key_der)


def _spent_or_expired(who: Principal) -> EstError:
    assert who.credential is not None
    used = who.credential.one_time and who.credential.used_at is not None
    return unauthenticated(f"EST credential {who.credential.name!r} "
                            + ("has been used" if used else "has expired"))


def _issued(cert: x509.Certificate, key_der: bytes | None) -> Reply:
    if key_der is not None:
        body, ctype = wire.serverkeygen_multipart(key_der, cert)
        return Reply(200, body, ctype)
    # RFC 7030 4.2.3: the answer holds only the certificate that was issued.
    return Reply(200, wire.certs_only([cert]), wire.CERTS_ONLY,
                 {"Content-Transfer-Encoding": "base64"})


def _pending(request_id: str, reason: str, profile: Profile) -> Reply:
    seconds = int(estconfig.profile_settings(profile).retry_after.total_seconds())
    # RFC 7030 4.2.3: 202 and Retry-After; the client repeats the same request.
    return text(202, f"request {request_id} is pending: {reason}; repeat this request "
                f"after {seconds} s", {"Retry-After": str(seconds)})


def _check_pop(ctx: Ctx, csr: x509.CertificateSigningRequest) -> None:
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
