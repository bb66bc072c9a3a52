"""What an approver sees before deciding a held request.

Who asked, through which protocol and for which profile, every name the certificate
would carry (a CN the profile turns into a name included), the key, how long the request
has waited, and the profile's rules run again on the stored CSR, without issuing: which
held and which would refuse it now (the profile may have changed since it was held).
``CertificateAuthority.review`` builds one; the command line renders it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography import x509

from certwright.ca import builtin, policy
from certwright.ca.policy import EnrollmentRequest
from certwright.ca.profiles import Config, Profile
from certwright.errors import CertwrightError
from certwright.model.certificates import RequestRecord
from certwright.pki import csr as csrlib
from certwright.pki import keys
from certwright.pki.keys import KeyDescription
from certwright.pki.names import common_name


@dataclasses.dataclass(frozen=True)
class Check:
    """One profile rule run on the request: ``rule`` as errors name it (``keys``,
    ``names.dns``, ``validity.max``...), whether it held, and what it found."""

    rule: str
    held: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Review:
    request: RequestRecord
    subject: str  # the CSR's subject (RFC 4514), "" when empty
    # The names the certificate would carry (``dns:...``) when the profile accepts the
    # request; otherwise the CSR's own (a CN the profile uses as a name as ``cn:...``).
    names: tuple[str, ...]
    key: KeyDescription | None  # None: a key the CA never signs for (see checks)
    waited: dt.timedelta  # until now, or until the operator decided
    checks: tuple[Check, ...]

    @property
    def would_issue(self) -> bool:
        """Approving now would issue (every rule holds)."""
        return bool(self.checks) and all(c.held for c in self.checks)


def review(config: Config, record: RequestRecord, request: EnrollmentRequest,
           now: dt.datetime) -> Review:
    """Run ``record``'s profile on ``request`` (the request as ``approve`` would decide
    it) without issuing anything."""
    csr = request.csr
    try:
        key: KeyDescription | None = keys.describe(csr.public_key())
    except CertwrightError:
        key = None
    profile = builtin.profile(config, record.profile) or config.profiles.get(record.profile)
    names = _requested_names(csr, profile)
    if profile is None:
        checks = [Check("profile", False, f"profile {record.profile!r} is no longer configured")]
    else:
        checks, issued_names = _checks(config, profile, request, now)
        if issued_names is not None:
            names = issued_names
    waited = (record.decided_at or now) - record.created_at
    return Review(request=record, subject=csr.subject.rfc4514_string(), names=names,
                  key=key, waited=max(waited, dt.timedelta(0)), checks=tuple(checks))


def _requested_names(csr: x509.CertificateSigningRequest,
                     profile: Profile | None) -> tuple[str, ...]:
    try:
        found = tuple(csrlib.requested_names(csr).as_strings())
    except CertwrightError:
        found = ()
    cn = common_name(csr.subject)
    if not found and cn is not None and profile is not None and profile.names.cn_as_san:
        found = (f"cn:{cn}",)
    return found


def _failed(e: CertwrightError, rule: str) -> Check:
    return Check(e.rule or rule, False, e.detail)


def _checks(config: Config, profile: Profile, request: EnrollmentRequest,
            now: dt.datetime) -> tuple[list[Check], tuple[str, ...] | None]:
    """The rules one by one (protocols, keys, validity are independent of each other),
    then the RA's whole decision, which alone says whether the names hold: (checks, the
    names the certificate would carry if the RA accepts the request)."""
    checks: list[Check] = []
    if request.protocol in profile.protocols:
        checks.append(Check("protocols", True, f"{request.protocol} is one of "
                                               f"{', '.join(profile.protocols)}"))
    else:
        checks.append(Check("protocols", False, f"the profile does not accept requests over "
                                                f"{request.protocol}"))
    try:
        desc = policy.check_key(profile, request.csr.public_key())
        checks.append(Check("keys", True, f"{desc} is allowed"))
    except CertwrightError as e:
        checks.append(_failed(e, "keys"))
    try:
        start, end = policy.validity_window(profile, request.not_before, request.not_after,
                                            now)
        days = (end - start).total_seconds() / 86400
        checks.append(Check("validity", True, f"{days:g} days if approved now"))
    except CertwrightError as e:
        checks.append(_failed(e, "validity"))
    try:
        issue = policy.check(config, request, now)
    except CertwrightError as e:
        if not any(c.rule == (e.rule or "policy") for c in checks):
            # A rule the checks above do not cover (names, server_keygen, renewal...).
            checks.insert(2, _failed(e, "policy"))
        return checks, None
    names = issue.names.as_strings()
    count = len(names)
    checks.insert(2, Check("names", True, f"{count} name{'s' if count != 1 else ''} within "
                                          "the profile's names"))
    if issue.common_name is not None:
        checks.insert(3, Check("names.keep_cn", True,
                               f"the subject CN {issue.common_name} is kept"))
        if not issue.names.contains_value(issue.common_name):
            names.append(f"cn:{issue.common_name}")
    return checks, tuple(names)
