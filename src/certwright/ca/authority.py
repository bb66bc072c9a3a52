"""The Authority: the single place that signs.

It turns an RA decision (``policy.Issue``) into a to-be-signed template, checks the
template against the profile once more, then: reserves a serial no stored certificate
has, lints the to-be-signed certificate when ``issuance.lint`` is on (``lint.Linter``,
no CA signature involved), signs once with the issuing key from the key provider, and
stores the certificate together with its audit record in one transaction. The
certificate leaves ``issue()`` only after that transaction is durable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy.engine import Connection

from certwright.ca import lint
from certwright.ca.keys import Signer
from certwright.ca.policy import Issue, check_names
from certwright.ca.profiles import Profile
from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind
from certwright.model.certificates import CertificateRecord, format_serial
from certwright.pki.keys import KeyAlgorithm
from certwright.pki.names import Names
from certwright.store import schema
from certwright.store.repo import Store

# Runs inside the issuance's transaction, after the certificate row is written.
OnCommit = Callable[[Connection, CertificateRecord], None]

# The serial reservation's query (compiled once per Authority, see _serial_taken).
_SERIAL_TAKEN = sa.select(schema.certificates.c.serial).where(
    schema.certificates.c.serial == sa.bindparam("serial"))

EKU_OIDS = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}

# Which key usages make sense for which subject key (RFC 5280 4.2.1.3, RFC 8813,
# RFC 8410 section 5): a key cannot encipher with a signature-only algorithm.
_USAGES_FOR_KEY = {
    KeyAlgorithm.RSA: {"digital_signature", "content_commitment", "key_encipherment",
                       "data_encipherment"},
    KeyAlgorithm.ECDSA: {"digital_signature", "content_commitment", "key_agreement"},
    KeyAlgorithm.ED25519: {"digital_signature", "content_commitment"},
}

SERIAL_BITS = 128


def new_serial() -> int:
    """128 bits from the CSPRNG (CA/B BR 7.1: at least 64), positive and non-zero."""
    while True:
        serial = secrets.randbits(SERIAL_BITS)
        if serial:
            return serial


@dataclasses.dataclass(frozen=True)
class Urls:
    """Where relying parties find the CA's certificate, CRL and OCSP responder."""

    ca_issuers: str
    crl: str
    ocsp: str


@dataclasses.dataclass(frozen=True)
class Template:
    """The to-be-signed certificate as data, so it can be checked before signing."""

    serial: int
    subject: x509.Name
    names: Names
    not_before: dt.datetime
    not_after: dt.datetime
    key_usage: frozenset[str]
    extended_key_usage: tuple[str, ...]
    policies: tuple[str, ...]
    public_key: CertificatePublicKeyTypes


class Prepared:
    """A checked template, good for one signature (Boulder's issuance token)."""

    def __init__(self, template: Template, issue: Issue) -> None:
        self.template = template
        self.issue = issue
        self.used = False


@dataclasses.dataclass(frozen=True)
class AuditContext:
    """What the audit record of an issuance says about the request behind it."""

    actor: str
    protocol: str
    requester: str
    request_id: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def usages_for(profile: Profile, key: KeyAlgorithm) -> frozenset[str]:
    return frozenset(u for u in profile.key_usage if u in _USAGES_FOR_KEY.get(key, set()))


class Authority:
    def __init__(
        self,
        *,
        signer: Signer,
        issuer_id: str,
        urls: Urls,
        store: Store,
        clock: Clock,
        lint_before_signing: bool = False,
    ) -> None:
        self.signer = signer
        self.issuer_id = issuer_id
        self.urls = urls
        self.store = store
        self.clock = clock
        self.lint_before_signing = lint_before_signing
        ca = signer.certificate
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
        self._issuer_name = ca.subject
        self._ca_not_after = ca.not_valid_after_utc
        self._linter = lint.Linter(ca.public_key())
        # The reservation's query in the store's own SQL dialect and parameter style.
        compiled = _SERIAL_TAKEN.compile(dialect=store.engine.dialect)
        self._serial_sql = str(compiled)
        self._serial_order = tuple(compiled.positiontup or ())
        # Extensions that are the same in every certificate, built once (x509 extension
        # values are immutable); the EKU and policies ones once per profile setting.
        self._basic_constraints = x509.BasicConstraints(ca=False, path_length=None)
        self._aia = x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(urls.ocsp)),
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(urls.ca_issuers)),
        ])
        self._crldp = x509.CRLDistributionPoints([
            x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(urls.crl)],
                                   relative_name=None, reasons=None, crl_issuer=None)
        ])
        self._ekus: dict[tuple[str, ...], x509.ExtendedKeyUsage] = {}
        self._policies: dict[tuple[str, ...], x509.CertificatePolicies] = {}

    # -- preparation --------------------------------------------------------------------

    def prepare(self, issue: Issue) -> Prepared:
        usages = usages_for(issue.profile, issue.key.algorithm)
        if "digital_signature" not in usages and "key_agreement" not in usages and (
            "key_encipherment" not in usages
        ):
            raise CertwrightError(
                ErrorKind.POLICY,
                f"profile {issue.profile_name!r} allows no key usage for a {issue.key} key",
                rule="key_usage",
            )
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, issue.common_name)]
            if issue.common_name else []
        )
        template = Template(
            serial=new_serial(),
            subject=subject,
            names=issue.names,
            not_before=issue.not_before,
            not_after=issue.not_after,
            key_usage=usages,
            extended_key_usage=issue.profile.extended_key_usage,
            policies=issue.profile.policies,
            public_key=issue.csr.public_key(),
        )
        self.check_template(template, issue)
        return Prepared(template, issue)

    def check_template(self, t: Template, issue: Issue) -> None:
        """The to-be-signed certificate must still satisfy the profile (defence in depth)."""
        profile = issue.profile

        def fail(detail: str, rule: str) -> CertwrightError:
            return CertwrightError(ErrorKind.POLICY, detail, rule=rule)

        check_names(profile, t.names)
        if t.not_after - t.not_before > profile.validity.max:
            raise fail("validity exceeds the profile's maximum", "validity.max")
        if t.not_after > self._ca_not_after:
            raise fail("the certificate would outlive the issuing CA", "validity")
        if t.not_before >= t.not_after:
            raise fail("notBefore is not before notAfter", "validity")
        cn = t.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cn and not t.names.contains_value(str(cn[0].value)):
            raise fail("subject CN is not one of the SANs", "names.keep_cn")
        if not t.names:
            raise fail("no subject alternative name", "names")
        if t.extended_key_usage != profile.extended_key_usage:
            raise fail("extended key usage differs from the profile", "extended_key_usage")
        if not t.key_usage <= set(profile.key_usage):
            raise fail("key usage outside the profile", "key_usage")

    # -- signing ------------------------------------------------------------------------

    def _eku(self, names: tuple[str, ...]) -> x509.ExtendedKeyUsage:
        ext = self._ekus.get(names)
        if ext is None:
            ext = self._ekus[names] = x509.ExtendedKeyUsage([EKU_OIDS[e] for e in names])
        return ext

    def _certificate_policies(self, oids: tuple[str, ...]) -> x509.CertificatePolicies:
        ext = self._policies.get(oids)
        if ext is None:
            ext = self._policies[oids] = x509.CertificatePolicies([
                x509.PolicyInformation(x509.ObjectIdentifier(p), None) for p in oids
            ])
        return ext

    def _builder(self, t: Template) -> x509.CertificateBuilder:
        ku = t.key_usage
        b = (
            x509.CertificateBuilder()
            .serial_number(t.serial)
            .issuer_name(self._issuer_name)
            .subject_name(t.subject)
            .public_key(t.public_key)
            .not_valid_before(t.not_before)
            .not_valid_after(t.not_after)
            .add_extension(self._basic_constraints, critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature="digital_signature" in ku,
                    content_commitment="content_commitment" in ku,
                    key_encipherment="key_encipherment" in ku,
                    data_encipherment="data_encipherment" in ku,
                    key_agreement="key_agreement" in ku,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(self._eku(t.extended_key_usage), critical=False)
            # RFC 5280 4.2.1.6: with an empty subject the SAN extension MUST be critical.
            .add_extension(
                x509.SubjectAlternativeName(t.names.general_names()),
                critical=len(t.subject) == 0,
            )
            .add_extension(self._aki, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(t.public_key),
                           critical=False)
            .add_extension(self._aia, critical=False)
            .add_extension(self._crldp, critical=False)
        )
        if t.policies:
            b = b.add_extension(self._certificate_policies(t.policies), critical=False)
        return b

    def _serial_taken(self, serial: int) -> bool:
        """Whether a committed certificate has this serial.

        One SELECT on a pooled connection of its own, without the transaction (BEGIN,
        COMMIT and their events) a store read wraps it in: a single statement reads one
        snapshot by itself, and that wrapping cost more than the rest of the reservation
        (measured with bench/issuance.py). It does not see a write the caller's unit of
        work has not committed yet; the serial's primary key still guards the insert.
        """
        params = {"serial": format_serial(serial)}
        conn = self.store.engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self._serial_sql, [params[k] for k in self._serial_order]
                               if self._serial_order else params)
                return cursor.fetchone() is not None
            finally:
                cursor.close()
        finally:
            conn.close()

    def _reserve(self, t: Template) -> Template:
        """The template with a serial no stored certificate has, drawn before anything
        is linted or signed, so a clash costs a fresh draw and never a second signature
        (RFC 5280 4.1.2.2: the serial is unique for each certificate a CA issues)."""
        for _attempt in range(3):
            if not self._serial_taken(t.serial):
                return t
            t = dataclasses.replace(t, serial=new_serial())
        raise CertwrightError(ErrorKind.INTERNAL, "could not allocate a unique serial number")

    def issue(self, prepared: Prepared, ctx: AuditContext,
              on_commit: OnCommit | None = None) -> tuple[CertificateRecord, x509.Certificate]:
        """Reserve the serial, lint (when on), sign once, store; in that order.

        Certificate and audit record are stored in one durable transaction; the
        certificate leaves this method only after it commits. ``on_commit(conn,
        record)`` runs inside the same transaction (for example to mark a pending
        request issued). Whatever fails, the CA key signs at most once per ``Prepared``.
        """
        if prepared.used:
            raise CertwrightError(ErrorKind.INTERNAL, "this prepared certificate was already "
                                  "signed")
        prepared.used = True
        t = self._reserve(prepared.template)
        builder = self._builder(t)
        linted = self._linter.check(
            builder, server_auth="server_auth" in t.extended_key_usage,
        ) if self.lint_before_signing else None
        cert = self.signer.sign_certificate(builder)
        if linted is not None and cert.tbs_certificate_bytes != linted:
            # A provider that built its own TBS (an HSM wrapper, say) would sign
            # something nobody linted.
            raise CertwrightError(ErrorKind.INTERNAL, "the signed certificate differs from "
                                  "the one linted; it was not stored")
        der = cert.public_bytes(serialization.Encoding.DER)
        record = CertificateRecord(
            serial=format_serial(t.serial),
            issuer=self.issuer_id,
            profile=prepared.issue.profile_name,
            subject=t.subject.rfc4514_string(),
            names=tuple(t.names.as_strings()),
            not_before=t.not_before,
            not_after=t.not_after,
            fingerprint=hashlib.sha256(der).hexdigest(),
            der=der,
            request_id=ctx.request_id,
            requester=ctx.requester,
            protocol=ctx.protocol,
            issued_at=self.clock.now(),
        )
        try:
            with self.store.write() as conn:
                self.store.insert_certificate(conn, record)
                self.store.append_audit(
                    conn, "certificate.issued", actor=ctx.actor, subject=record.serial,
                    at=record.issued_at,
                    data={
                        "profile": record.profile,
                        "protocol": ctx.protocol,
                        "requester": ctx.requester,
                        "request_id": ctx.request_id,
                        "names": list(record.names),
                        "key": str(prepared.issue.key),
                        "not_before": record.not_before.isoformat(),
                        "not_after": record.not_after.isoformat(),
                        "fingerprint": record.fingerprint,
                        **ctx.extra,
                    },
                )
                if on_commit is not None:
                    on_commit(conn, record)
        except sa.exc.IntegrityError:
            if not self._serial_taken(t.serial):
                raise
            # Another issuance stored the reserved serial while this one was signed: two
            # draws of the same 128 random bits, or a broken random source. The signed
            # certificate is dropped, never stored or returned; it is not signed again
            # under a new serial (one signature per issuance), the requester retries.
            raise CertwrightError(
                ErrorKind.INTERNAL, f"serial {record.serial} was taken while this "
                "certificate was signed; nothing was issued, try again") from None
        return record, cert
