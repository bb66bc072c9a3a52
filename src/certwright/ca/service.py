"""The core every front-end calls: decide (RA), sign (Authority), hold, approve, revoke.

A front-end builds an EnrollmentRequest, calls ``enroll`` once, and renders the outcome
(Issued, Held) or the CertwrightError in its own wire format. What else a front-end may
ask of the core is in the section "what front-ends ask": each front-end declares the
few of those methods it calls as a ``typing.Protocol`` of its own (step-ca's ACME and
SCEP packages each declare the authority methods they use) and never reaches past
them into the store or the Authority.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy.engine import Connection

from certwright.ca import policy
from certwright.ca.authority import AuditContext, Authority, OnCommit
from certwright.ca.credentials import Credentials
from certwright.ca.keys import Decrypter, KeyProvider, KeyRole, Signer
from certwright.ca.policy import EnrollmentRequest, Issue, Pending, Reject, Requester
from certwright.ca.profiles import Config
from certwright.ca.review import Review, review
from certwright.ca.revocation import CrlPublisher, OcspResponder, Reason
from certwright.ca.transactions import Transactions
from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind
from certwright.model.certificates import CertificateRecord, RequestRecord, format_serial
from certwright.pki import csr as csrlib
from certwright.store.audit import AuditRecord, Break
from certwright.store.repo import Store

if TYPE_CHECKING:
    from certwright.ca.datadir import Layout


@dataclasses.dataclass(frozen=True)
class Issued:
    record: CertificateRecord
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA(s), not the root

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def fullchain_pem(self) -> bytes:
        return self.pem() + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


@dataclasses.dataclass(frozen=True)
class Held:
    request_id: str
    reason: str


def _names_of(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    try:
        return tuple(csrlib.requested_names(csr).as_strings())
    except CertwrightError:
        return ()


def _as_enrollment(record: RequestRecord, approved_by: str | None = None) -> EnrollmentRequest:
    """A held request as the RA decides it again on approval."""
    return EnrollmentRequest(
        profile=record.profile, csr=x509.load_der_x509_csr(record.csr),
        requester=Requester(*record.requester.split(":", 1)),
        protocol=record.protocol, not_before=record.not_before,
        not_after=record.not_after, approved_by=approved_by,
    )


class CertificateAuthority:
    def __init__(self, *, config: Config, store: Store, authority: Authority,
                 crl: CrlPublisher, ocsp: OcspResponder, chain: tuple[x509.Certificate, ...],
                 root: x509.Certificate, clock: Clock, layout: Layout | None = None,
                 keys: KeyProvider | None = None) -> None:
        self.config = config
        self.store = store
        self.authority = authority
        self.crl = crl
        self.ocsp = ocsp
        self.chain = chain
        self.root = root
        self.clock = clock
        self.layout = layout
        self._keys = keys
        self._credentials: dict[str, Credentials] = {}

    # -- what front-ends ask ------------------------------------------------------------

    @property
    def issuer_id(self) -> str:
        """The issuing CA's identifier (the hex SHA-1 key identifier of its key)."""
        return self.authority.issuer_id

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        """One unit of work around a whole protocol request: every write the request
        makes through the core or its repository (audit events included) commits once,
        when the block ends, or not at all. Answer the client only after the block."""
        with self.store.unit():
            yield

    def audit(self, event: str, *, actor: str, subject: str, data: dict[str, Any],
              at: dt.datetime | None = None) -> None:
        """Append an event to the audit chain (inside the current unit, if any)."""
        self.store.audit(event, actor=actor, subject=subject, data=data,
                         at=at or self.clock.now())

    def check_store(self) -> None:
        """Raise if the store cannot be read (the health check)."""
        self.store.count_certificates()

    def find_certificate(self, serial: str) -> CertificateRecord | None:
        """The certificate with this (canonical hex) serial, if this store holds it."""
        return self.store.find_certificate(serial)

    def issued_here(self, cert: x509.Certificate) -> CertificateRecord | None:
        """The record of ``cert`` if this CA issued exactly this certificate: same
        serial, our issuing CA, and the SHA-256 of the whole certificate matching the
        one stored (which proves it without verifying a signature again)."""
        record = self.store.find_certificate(format_serial(cert.serial_number))
        if record is None or record.issuer != self.authority.issuer_id or (
                record.fingerprint != cert.fingerprint(hashes.SHA256()).hex()):
            return None
        return record

    def held_request(self, request_id: str) -> RequestRecord:
        """A request the RA held for an operator, in whatever state it is now."""
        return self.store.request(request_id)

    def outcome(self, request_id: str) -> Issued | Held:
        """What became of a held request: still Held, or Issued (with the certificate).
        A rejected request raises CertwrightError(UNAUTHORIZED) carrying the operator's
        reason, which each protocol renders as its refusal."""
        record = self.store.request(request_id)
        if record.state == "pending":
            return Held(record.id, record.reason or "awaiting an operator")
        if record.state == "rejected":
            raise CertwrightError(
                ErrorKind.UNAUTHORIZED,
                f"request {record.id} was rejected: {record.reason or 'rejected by an operator'}")
        assert record.state == "issued" and record.serial is not None
        cert_record = self.store.certificate(record.serial)
        return Issued(cert_record, x509.load_der_x509_certificate(cert_record.der), self.chain)

    def credentials(self, protocol: str) -> Credentials:
        """The named shared secrets ``protocol`` accepts (one object per protocol, so its
        cache of verified secrets lives as long as this CA)."""
        found = self._credentials.get(protocol)
        if found is None:
            found = self._credentials.setdefault(
                protocol, Credentials(self.store, self.clock, protocol))
        return found

    def transactions(self, protocol: str) -> Transactions:
        """The requests held for ``protocol``'s clients to collect."""
        return Transactions(self.store, self.clock, protocol)

    def _provider(self) -> KeyProvider:
        if self._keys is None:
            raise CertwrightError(ErrorKind.CONFIG, "this CA was opened without a key provider")
        return self._keys

    def protocol_signer(self, role: KeyRole, certificate: x509.Certificate) -> Signer:
        """A protocol's own signing key (a CMP protection key, ...) from the configured
        provider; the certificate is the one that key belongs to."""
        return self._provider().signer(role, certificate)

    def protocol_decrypter(self, role: KeyRole) -> Decrypter:
        """A protocol's decryption key (SCEP's pkcsPKIEnvelope, ...) from the provider."""
        return self._provider().decrypter(role)

    def repository(self, kind: str) -> object:
        """The storage a front-end keeps of its own (ACME orders, ...), by the name the
        storage layer registers it under; the front-end casts it to the Protocol it
        declares for it."""
        from certwright.store import repositories

        return repositories.open_repository(kind, self.store, self.clock)

    # -- what operators ask (the CLI) and the server's process management ---------------

    def held_requests(self, state: str | None = None) -> list[RequestRecord]:
        """Requests the RA held, oldest first (``state``: pending, issued, rejected)."""
        return self.store.requests(state)

    def review(self, request_id: str) -> Review:
        """What an approver needs to decide a held request: its requester, names, key,
        wait, and the profile's rules run again on its CSR (nothing is issued)."""
        record = self.store.request(request_id)
        return review(self.config, record, _as_enrollment(record), self.clock.now())

    def reviews(self, state: str | None = None) -> list[Review]:
        """``review`` of every held request in ``state``, oldest first."""
        now = self.clock.now()
        return [review(self.config, r, _as_enrollment(r), now)
                for r in self.store.requests(state)]

    def certificates(self, *, profile: str | None = None, revoked: bool | None = None,
                     limit: int = 1000) -> list[CertificateRecord]:
        """Issued certificates, newest first."""
        return self.store.certificates(profile=profile, revoked=revoked, limit=limit)

    def certificate(self, serial: str) -> CertificateRecord:
        """The certificate with this serial (NOT_FOUND if this store holds none)."""
        return self.store.certificate(serial)

    def verify_audit(self) -> tuple[int, Break | None]:
        """Walk the audit chain: records verified, and the first break if any."""
        return self.store.verify_audit()

    def audit_records(self) -> Iterator[AuditRecord]:
        """Every audit record, oldest first."""
        return self.store.iter_audit()

    def after_fork(self) -> None:
        """In a forked worker process: drop the parent's pooled connections."""
        self.store.after_fork()

    def close(self) -> None:
        self.store.close()

    # -- enrollment ---------------------------------------------------------------------

    def enroll(self, request: EnrollmentRequest) -> Issued | Held:
        """Decide and act. Raises CertwrightError for a rejection (after auditing it)."""
        now = self.clock.now()
        decision = policy.decide(self.config, request, now)
        if isinstance(decision, Reject):
            self._audit_rejection(request, decision.error, now)
            raise decision.error
        if isinstance(decision, Pending):
            return self._hold(request, decision, now)
        return self._issue(decision, request, request_id=None)

    def _issue(self, decision: Issue, request: EnrollmentRequest, *,
               request_id: str | None, on_commit: OnCommit | None = None) -> Issued:
        try:
            prepared = self.authority.prepare(decision)
        except CertwrightError as e:
            self._audit_rejection(request, e, self.clock.now())
            raise
        ctx = AuditContext(
            actor=request.approved_by or str(request.requester),
            protocol=request.protocol,
            requester=str(request.requester),
            request_id=request_id,
            extra={"approved_by": request.approved_by} if request.approved_by else {},
        )
        record, cert = self.authority.issue(prepared, ctx, on_commit=on_commit)
        return Issued(record, cert, self.chain)

    def _audit_rejection(self, request: EnrollmentRequest, error: CertwrightError,
                         now: dt.datetime) -> None:
        self.store.audit(
            "request.rejected", actor=str(request.requester), subject=request.profile, at=now,
            data={"protocol": request.protocol, "profile": request.profile,
                  "names": list(_names_of(request.csr)), "reason": error.detail,
                  "rule": error.rule, "kind": error.kind.value},
        )

    def _hold(self, request: EnrollmentRequest, decision: Pending, now: dt.datetime) -> Held:
        request_id = secrets.token_hex(8)
        record = RequestRecord(
            id=request_id, profile=request.profile, protocol=request.protocol,
            requester=str(request.requester),
            csr=request.csr.public_bytes(serialization.Encoding.DER),
            names=_names_of(request.csr), not_before=request.not_before,
            not_after=request.not_after, state="pending", reason=decision.reason,
            created_at=now, decided_at=None, decided_by=None, serial=None,
        )
        with self.store.write() as conn:
            self.store.insert_request(conn, record)
            self.store.append_audit(
                conn, "request.pending", actor=str(request.requester), subject=request_id,
                at=now, data={"protocol": request.protocol, "profile": request.profile,
                              "names": list(record.names), "reason": decision.reason},
            )
        return Held(request_id, decision.reason)

    # -- operator decisions -------------------------------------------------------------

    def _pending(self, request_id: str) -> RequestRecord:
        rec = self.store.request(request_id)
        if rec.state != "pending":
            raise CertwrightError(ErrorKind.CONFLICT,
                                  f"request {request_id} is {rec.state}, not pending")
        return rec

    def approve(self, request_id: str, operator: str) -> Issued:
        """Issue a held request. The profile is applied again: it may have changed."""
        rec = self._pending(request_id)
        request = _as_enrollment(rec, approved_by=operator)
        now = self.clock.now()
        decision = policy.decide(self.config, request, now)
        if isinstance(decision, Reject):
            self._audit_rejection(request, decision.error, now)
            raise decision.error
        assert isinstance(decision, Issue)

        def mark_issued(conn: Connection, record: CertificateRecord) -> None:
            # Lock and re-check: two operators approving at once issue one certificate.
            current = self.store.request(request_id, conn, lock=True)
            if current.state != "pending":
                raise CertwrightError(ErrorKind.CONFLICT,
                                      f"request {request_id} is {current.state}, not pending")
            self.store.update_request(conn, request_id, state="issued", decided_at=now,
                                      decided_by=operator, serial=record.serial)
            self.store.append_audit(conn, "request.approved", actor=operator,
                                    subject=request_id, at=now,
                                    data={"serial": record.serial})

        return self._issue(decision, request, request_id=request_id, on_commit=mark_issued)

    def reject(self, request_id: str, operator: str, reason: str) -> RequestRecord:
        now = self.clock.now()
        with self.store.write() as conn:
            current = self.store.request(request_id, conn, lock=True)
            if current.state != "pending":
                raise CertwrightError(ErrorKind.CONFLICT,
                                      f"request {request_id} is {current.state}, not pending")
            self.store.update_request(conn, request_id, state="rejected", decided_at=now,
                                      decided_by=operator, reason=reason)
            self.store.append_audit(conn, "request.rejected", actor=operator,
                                    subject=request_id, at=now,
                                    data={"reason": reason, "profile": current.profile})
        return self.store.request(request_id)

    # -- revocation ---------------------------------------------------------------------

    def revoke(self, serial: str, reason: Reason, actor: str) -> CertificateRecord:
        """Mark revoked, audit, and publish a new CRL, all in one transaction."""
        now = self.clock.now().replace(microsecond=0)
        with self.store.write() as conn:
            record = self.store.mark_revoked(conn, serial, now, reason.value)
            self.store.append_audit(conn, "certificate.revoked", actor=actor, subject=serial,
                                    at=now, data={"reason": reason.value,
                                                  "profile": record.profile})
            if record.issuer == self.authority.issuer_id:
                self.crl.generate(conn)
        return record
