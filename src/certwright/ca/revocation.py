"""Revocation: CRLs (RFC 5280 section 5) and an OCSP responder (RFC 6960).

The issuing CA signs both itself (no delegated OCSP responder), so relying parties need
nothing beyond the chain they already have.
"""

from __future__ import annotations

import datetime as dt
import enum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certwright.ca.keys import Signer
from certwright.ca.profiles import format_duration
from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind, config_error
from certwright.store.repo import Store, StoredCrl, format_serial


class Reason(enum.Enum):
    """RFC 5280 5.3.1 reason codes an operator may give (certificateHold is not offered:
    BR 4.9.13 forbids suspension)."""

    unspecified = "unspecified"
    key_compromise = "keyCompromise"
    ca_compromise = "cACompromise"
    affiliation_changed = "affiliationChanged"
    superseded = "superseded"
    cessation_of_operation = "cessationOfOperation"
    privilege_withdrawn = "privilegeWithdrawn"

    @classmethod
    def parse(cls, text: str) -> Reason:
        key = text.replace("-", "").replace("_", "").lower()
        for r in cls:
            if r.value.lower() == key or r.name.replace("_", "") == key:
                return r
        choices = ", ".join(r.value for r in cls)
        raise CertwrightError(ErrorKind.MALFORMED,
                              f"unknown revocation reason {text!r}; choose one of {choices}")

    @property
    def flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags(self.value)


class CrlPublisher:
    def __init__(self, *, signer: Signer, issuer_id: str, crl_url: str, store: Store,
                 clock: Clock, validity: dt.timedelta, refresh_before: dt.timedelta) -> None:
        if refresh_before >= validity:
            # Every CRL would be stale the moment it is signed: each fetch would sign
            # another one (and take the store's write lock to do it).
            raise config_error(
                f"issuance.crl_refresh_before ({format_duration(refresh_before)}) must be "
                f"shorter than issuance.crl_validity ({format_duration(validity)})")
        self.signer = signer
        self.issuer_id = issuer_id
        self.crl_url = crl_url
        self.store = store
        self.clock = clock
        self.validity = validity
        self.refresh_before = refresh_before

    def _stale(self, crl: StoredCrl | None, now: dt.datetime) -> bool:
        return crl is None or now >= crl.next_update - self.refresh_before

    def current(self) -> StoredCrl:
        """The CRL to serve: the stored one, or a fresh one when it nears its nextUpdate."""
        now = self.clock.now()
        crl = self.store.crl(self.issuer_id)
        if not self._stale(crl, now):
            assert crl is not None
            return crl
        with self.store.write() as conn:
            # Another replica may have refreshed it while we waited for the lock.
            number = self.store.next_crl_number(conn, self.issuer_id)
            crl = self.store.crl(self.issuer_id) if number > 1 else None
            if crl is not None and not self._stale(crl, now):
                return crl
            return self.generate(conn, number)

    def generate(self, conn: object, number: int | None = None) -> StoredCrl:
        """Sign a new CRL inside the caller's write transaction (revocation calls this)."""
        from sqlalchemy.engine import Connection

        assert isinstance(conn, Connection)
        if number is None:
            number = self.store.next_crl_number(conn, self.issuer_id)
        now = self.clock.now().replace(microsecond=0)
        ca = self.signer.certificate
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.subject)
            .last_update(now)
            .next_update(now + self.validity)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(
                x509.IssuingDistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(self.crl_url)],
                    relative_name=None, only_contains_user_certs=True,
                    only_contains_ca_certs=False, only_some_reasons=None,
                    indirect_crl=False, only_contains_attribute_certs=False),
                critical=True,
            )
        )
        c = self.store
        from certwright.store import schema

        rows = conn.execute(
            schema.certificates.select()
            .with_only_columns(schema.certificates.c.serial, schema.certificates.c.revoked_at,
                               schema.certificates.c.revocation_reason)
            .where(schema.certificates.c.issuer == self.issuer_id,
                   schema.certificates.c.revoked_at.is_not(None))
        )
        for serial, revoked_at, reason in rows:
            entry = (x509.RevokedCertificateBuilder()
                     .serial_number(int(serial, 16)).revocation_date(revoked_at))
            # RFC 5280 5.3.1: the reason code unspecified SHOULD be absent.
            if reason and reason != Reason.unspecified.value:
                entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags(reason)),
                                            critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        signed = self.signer.sign_crl(builder)
        stored = StoredCrl(self.issuer_id, number, now, now + self.validity,
                           signed.public_bytes(serialization.Encoding.DER))
        c.put_crl(conn, stored)
        return stored


class OcspResponder:
    def __init__(self, *, signer: Signer, issuer_id: str, store: Store, clock: Clock,
                 validity: dt.timedelta) -> None:
        self.signer = signer
        self.issuer_id = issuer_id
        self.store = store
        self.clock = clock
        self.validity = validity
        ca = signer.certificate
        self._name_der = ca.subject.public_bytes()
        self._key_der = ca.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _issuer_hashes(self, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        # RFC 6960 4.1.1: issuerKeyHash is the hash of the BIT STRING subjectPublicKey.
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        key = self.signer.certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            raw = key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.PKCS1)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            raw = key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raise CertwrightError(ErrorKind.INTERNAL, "unsupported CA key for OCSP")

        def digest(data: bytes) -> bytes:
            h = hashes.Hash(algorithm)
            h.update(data)
            return h.finalize()

        return digest(self._name_der), digest(raw)

    def respond(self, der: bytes) -> bytes:
        """Answer one DER OCSPRequest with a DER OCSPResponse; never raises for bad input."""
        try:
            req = ocsp.load_der_ocsp_request(der)
            serial = req.serial_number
            algorithm = req.hash_algorithm
            name_hash, key_hash = req.issuer_name_hash, req.issuer_key_hash
            # Extensions are parsed on first access: a duplicate one raises here, not later.
            nonces = [e.value for e in req.extensions if isinstance(e.value, x509.OCSPNonce)]
        except Exception:
            # Not DER, truncated, more than one request (cryptography refuses those), an
            # unsupported hash algorithm, duplicate extensions: all malformedRequest.
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if serial < 0:
            # RFC 5280 4.1.2.2: serial numbers are positive; a negative one names nothing.
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if (name_hash, key_hash) != self._issuer_hashes(algorithm):
            # RFC 6960 2.3: "unauthorized" when the responder is not authoritative.
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        now = self.clock.now().replace(microsecond=0)
        record = self.store.find_certificate(format_serial(serial))
        ca = self.signer.certificate
        builder = ocsp.OCSPResponseBuilder()
        if record is None or record.issuer != self.issuer_id:
            builder = builder.add_response_by_hash(
                issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=serial,
                algorithm=algorithm, cert_status=ocsp.OCSPCertStatus.UNKNOWN,
                this_update=now, next_update=now + self.validity, revocation_time=None,
                revocation_reason=None)
        else:
            cert = x509.load_der_x509_certificate(record.der)
            if record.revoked_at is not None:
                reason = (x509.ReasonFlags(record.revocation_reason)
                          if record.revocation_reason and
                          record.revocation_reason != Reason.unspecified.value else None)
                builder = builder.add_response(
                    cert=cert, issuer=ca, algorithm=algorithm,
                    cert_status=ocsp.OCSPCertStatus.REVOKED, this_update=now,
                    next_update=now + self.validity, revocation_time=record.revoked_at,
                    revocation_reason=reason)
            else:
                builder = builder.add_response(
                    cert=cert, issuer=ca, algorithm=algorithm,
                    cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now,
                    next_update=now + self.validity, revocation_time=None,
                    revocation_reason=None)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
        for nonce in nonces:
            # RFC 8954 2.1: the responder includes the request's nonce in the response.
            builder = builder.add_extension(nonce, critical=False)
        return self.signer.sign_ocsp(builder).public_bytes(serialization.Encoding.DER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)
