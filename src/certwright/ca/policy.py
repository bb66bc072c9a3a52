"""The RA: one function decides every request, whatever protocol it came from.

``decide`` returns Issue (with the exact contents the Authority must sign), Pending (held
for an operator) or Reject (with the rule that refused it). Front-ends never apply
policy themselves; a rule added to a profile holds for every protocol at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress

from cryptography import x509

from certwright.ca import builtin
from certwright.ca.profiles import Approval, Config, Profile
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki import csr as csrlib
from certwright.pki import keys
from certwright.pki.keys import KeyAlgorithm, KeyDescription
from certwright.pki.names import Names, common_name, from_general_names


@dataclasses.dataclass(frozen=True)
class Requester:
    """Who asked: an ACME account, an EST credential, a CLI operator..."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclasses.dataclass(frozen=True)
class EnrollmentRequest:
    """A request for a certificate as every front-end hands it to the core."""

    profile: str
    csr: x509.CertificateSigningRequest
    requester: Requester
    protocol: str  # the front-end's name (certwright.registry)
    # Requested validity, when the protocol carries one (ACME newOrder, CMP, the CLI).
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    # Set when an operator approved this request (it was Pending before).
    approved_by: str | None = None
    # The certificate this request renews (EST simplereenroll), as authenticated by the
    # front-end: the new one must name the same subject and names unless the profile
    # allows changes.
    renews: x509.Certificate | None = None
    # The front-end generated the key pair for the requester (EST serverkeygen); the CSR
    # is signed with that key.
    server_keygen: bool = False
    # The front-end checked that the subject CN is one of the names the requester asked
    # for and proved (its protocol lets a name stand in the CN alone): the CN joins the
    # subjectAltName, as ``names.cn_as_san`` makes it for a CN-only request.
    cn_is_name: bool = False


@dataclasses.dataclass(frozen=True)
class Issue:
    """Everything the Authority needs to build the certificate; nothing left to choose."""

    profile_name: str
    profile: Profile
    csr: x509.CertificateSigningRequest
    key: KeyDescription
    names: Names
    common_name: str | None
    not_before: dt.datetime
    not_after: dt.datetime


@dataclasses.dataclass(frozen=True)
class Pending:
    reason: str


@dataclasses.dataclass(frozen=True)
class Reject:
    error: CertwrightError

    @property
    def reason(self) -> str:
        return str(self.error)


Decision = Issue | Pending | Reject


def decide(config: Config, request: EnrollmentRequest, now: dt.datetime) -> Decision:
    """Apply the profile named by the request; never raises for a policy failure."""
    try:
        issue = check(config, request, now)
    except CertwrightError as e:
        return Reject(e)
    if issue.profile.approval is Approval.MANUAL and request.approved_by is None:
        return Pending(f"profile {request.profile!r} requires an operator's approval")
    return issue


def check(config: Config, request: EnrollmentRequest, now: dt.datetime) -> Issue:
    """Check a request against its profile; raise CertwrightError naming the broken rule."""
    profile = builtin.profile(config, request.profile) or config.profile(request.profile)
    if request.protocol not in profile.protocols:
        raise CertwrightError(
            ErrorKind.UNAUTHORIZED,
            f"profile {request.profile!r} does not accept requests over "
            f"{request.protocol}",
            rule="protocols",
        )
    if request.server_keygen and not profile.server_keygen:
        raise CertwrightError(
            ErrorKind.POLICY, "server-side key generation is not allowed by this profile",
            rule="server_keygen")
    key = check_key(profile, request.csr.public_key())
    names = csrlib.requested_names(request.csr)
    cn = common_name(request.csr.subject)
    if cn is not None and (request.cn_is_name or (not names and profile.names.cn_as_san)):
        # RFC 6125 clients ignore the CN, so a CN that is a requested name goes into the
        # SAN too (CA/B Forum BRs 7.1.2.7.12: the SAN is required).
        names = _with_cn(names, cn)
    check_names(profile, names)
    kept_cn = None
    if profile.names.keep_cn and cn is not None:
        if not names.contains_value(cn):
            raise CertwrightError(
                ErrorKind.REJECTED_IDENTIFIER,
                f"subject CN {cn!r} is not one of the subject alternative names",
                rule="names.keep_cn",
            )
        kept_cn = cn.strip().lower().rstrip(".") if names.dns else cn.strip()
        if len(kept_cn) > 64:  # RFC 5280 ub-common-name
            kept_cn = None
    if request.renews is not None and not profile.renewal_may_change_names:
        check_renewal(request.renews, names, kept_cn)
    not_before, not_after = check_validity(profile, request, now)
    return Issue(
        profile_name=request.profile,
        profile=profile,
        csr=request.csr,
        key=key,
        names=names,
        common_name=kept_cn,
        not_before=not_before,
        not_after=not_after,
    )


def check_renewal(old: x509.Certificate, names: Names, cn: str | None) -> None:
    """A renewal names what the renewed certificate names: the same subject CN and the
    same subject alternative names (RFC 7030 4.2.2: "The Subject and SubjectAltName
    fields in the CSR MUST be identical to the corresponding fields in the certificate
    being renewed"). Compared as the certificate to be issued would carry them, so a CSR
    whose subject has attributes the profile drops is not refused for them."""
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        old_names = set(from_general_names(san).as_strings())
    except x509.ExtensionNotFound:
        old_names = set()
    if set(names.as_strings()) != old_names:
        raise CertwrightError(
            ErrorKind.REJECTED_IDENTIFIER,
            "a renewal must request the names of the certificate it renews "
            f"({', '.join(sorted(old_names)) or 'none'})", rule="renewal_may_change_names")
    old_cn = common_name(old.subject)
    if (old_cn or None) != (cn or None):
        raise CertwrightError(
            ErrorKind.REJECTED_IDENTIFIER,
            f"a renewal must keep the subject of the certificate it renews "
            f"({old.subject.rfc4514_string() or 'empty'})", rule="renewal_may_change_names")


def _with_cn(names: Names, cn: str) -> Names:
    """``names`` with the CN first among them (unchanged if they hold it already)."""
    if names.contains_value(cn):
        return names
    try:
        return dataclasses.replace(names, ip=(ipaddress.ip_address(cn.strip()), *names.ip))
    except ValueError:
        pass
    from certwright.pki.names import normalize_dns

    return dataclasses.replace(names, dns=(normalize_dns(cn), *names.dns))


def check_key(profile: Profile, public_key: object) -> KeyDescription:
    desc = keys.describe(public_key)
    rules = profile.keys

    def refuse(detail: str, rule: str) -> CertwrightError:
        return CertwrightError(ErrorKind.BAD_PUBLIC_KEY, detail, rule=rule)

    if desc.algorithm is KeyAlgorithm.RSA:
        if not rules.rsa:
            raise refuse("RSA keys are not allowed by this profile", "keys.rsa")
        if desc.bits < rules.rsa_min_bits:
            raise refuse(
                f"RSA key of {desc.bits} bits is below this profile's minimum of "
                f"{rules.rsa_min_bits}",
                "keys.rsa_min_bits",
            )
    elif desc.algorithm is KeyAlgorithm.ECDSA:
        if desc.curve not in rules.ecdsa_curves:
            allowed = ", ".join(rules.ecdsa_curves) or "none"
            raise refuse(
                f"ECDSA curve {desc.curve} is not allowed by this profile (allowed: {allowed})",
                "keys.ecdsa_curves",
            )
    elif desc.algorithm is KeyAlgorithm.ED25519:
        if not rules.ed25519:
            raise refuse("Ed25519 keys are not allowed by this profile", "keys.ed25519")
    else:
        raise refuse(f"{desc} keys are not supported", "keys")
    return desc


def _wildcard_allowed(base: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if p == "*":
            return True
        if p.startswith("*.") and (base == p[2:] or base.endswith(p[1:])):
            return True
    return False


def _dns_allowed(name: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if p == "*" or p == name:
            return True
        if p.startswith("*.") and name.endswith(p[1:]):
            return True
    return False


def check_names(profile: Profile, names: Names) -> None:
    rules = profile.names

    def refuse(detail: str, rule: str) -> CertwrightError:
        return CertwrightError(ErrorKind.REJECTED_IDENTIFIER, detail, rule=rule)

    if not names:
        raise refuse("the request names no subject alternative name", "names")
    count = len(names.dns) + len(names.ip) + len(names.uri) + len(names.email)
    if count > rules.max_names:
        raise refuse(f"{count} names requested; this profile allows {rules.max_names}",
                     "names.max_names")
    for dns in names.dns:
        if dns.startswith("*."):
            if not rules.wildcards:
                raise refuse(f"wildcard name {dns!r} is not allowed by this profile",
                             "names.wildcards")
            # "*.a.example" stands for every name one label below a.example, so it needs a
            # pattern that covers all of them ("*" or "*.example"/"*.a.example"), never an
            # exact name that merely looks like one of them.
            if not _wildcard_allowed(dns[2:], rules.dns):
                raise refuse(f"DNS name {dns!r} is outside this profile's names", "names.dns")
        elif not _dns_allowed(dns, rules.dns):
            raise refuse(f"DNS name {dns!r} is outside this profile's names", "names.dns")
    for ip in names.ip:
        if not any(ip.version == net.version and ip in net for net in rules.ip):
            raise refuse(f"IP address {ip} is outside this profile's networks", "names.ip")
    for uri in names.uri:
        if not any(uri.startswith(prefix) for prefix in rules.uri):
            raise refuse(f"URI {uri!r} is outside this profile's URI prefixes", "names.uri")
    for email in names.email:
        domain = email.rpartition("@")[2]
        if not any(d == "*" or d == domain for d in rules.email):
            raise refuse(f"e-mail address {email!r} is outside this profile's domains",
                         "names.email")


def check_validity(
    profile: Profile, request: EnrollmentRequest, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    return validity_window(profile, request.not_before, request.not_after, now)


def validity_window(profile: Profile, not_before: dt.datetime | None,
                    not_after: dt.datetime | None, now: dt.datetime
                    ) -> tuple[dt.datetime, dt.datetime]:
    """The validity a request gets under ``profile``; raises for one it may not have.

    Front-ends that learn the requested validity before the CSR (ACME newOrder) call this
    to refuse early; the decision itself is made again in ``decide``.
    """
    v = profile.validity
    # Certificates carry whole seconds (RFC 5280 4.1.2.5); so do our decisions.
    start = (not_before or now - v.backdate).replace(microsecond=0)
    if not_before is not None and not_before > now + dt.timedelta(days=1):
        raise CertwrightError(ErrorKind.POLICY, "requested notBefore is more than a day ahead",
                              rule="validity")
    # A certificate must not claim validity long before the request (and its validation)
    # existed: backdating is the profile's, up to validity.backdate.
    if not_before is not None and not_before < now - v.backdate:
        raise CertwrightError(
            ErrorKind.POLICY,
            f"requested notBefore is more than {v.backdate.total_seconds() / 3600:g} h in the "
            "past (validity.backdate)", rule="validity.backdate")
    if not_after is not None:
        end = not_after.replace(microsecond=0)
        if end <= now:
            raise CertwrightError(ErrorKind.POLICY, "requested notAfter is in the past",
                                  rule="validity")
        if end <= start:
            raise CertwrightError(ErrorKind.POLICY, "requested notAfter is not after notBefore",
                                  rule="validity")
    else:
        end = start + v.default
    if end - start > v.max:
        days = (end - start).total_seconds() / 86400
        raise CertwrightError(
            ErrorKind.POLICY,
            f"requested validity of {days:.1f} days exceeds this profile's maximum of "
            f"{v.max.total_seconds() / 86400:g} days",
            rule="validity.max",
        )
    return start, end
