"""Who is asking, for which profile: an HTTP Basic bootstrap credential bound to the
profile (RFC 7030 3.2.3), a TLS client certificate from a trust anchor the profile names
(3.3.2, an IDevID say), or for simplereenroll the certificate being renewed (4.2.2).

Without a label in the path the profile is the requester's own: the one a credential is
bound to, the one the renewed certificate was issued under, or the one whose trust
anchor issued the client certificate.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from certwright.ca.credentials import CredentialRefused
from certwright.ca.policy import Requester
from certwright.ca.profiles import Config
from certwright.errors import config_error
from certwright.est import config as estconfig
from certwright.est.base import REENROLL, Ctx, EstError, Labels, unauthenticated
from certwright.est.ports import PROTOCOL, Core
from certwright.model.credentials import Credential

__all__ = ["Authenticator", "Principal", "load_anchors"]

_SHA256 = hashes.SHA256()


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


def load_anchors(config: Config, root: Path) -> dict[str, tuple[x509.Certificate, ...]]:
    """Each EST profile's client_trust_anchors, read relative to the data directory
    ``root``."""
    anchors: dict[str, tuple[x509.Certificate, ...]] = {}
    for name, profile in config.profiles.items():
        certs: list[x509.Certificate] = []
        for path in estconfig.profile_settings(profile).client_trust_anchors:
            full = path if path.is_absolute() else root / path
            try:
                certs += x509.load_pem_x509_certificates(full.read_bytes())
            except (OSError, ValueError) as e:
                raise config_error(f"profiles.{name}.est.client_trust_anchors: {full}: "
                                   f"cannot load PEM certificates: {e}") from None
        anchors[name] = tuple(certs)
    return anchors


def basic(header: str) -> tuple[str, str] | None:
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


class Authenticator:
    def __init__(self, core: Core, labels: Labels,
                 anchors: dict[str, tuple[x509.Certificate, ...]]) -> None:
        self.core = core
        self.labels = labels
        self.anchors = anchors
        self.credentials = core.credentials(PROTOCOL)
        # Certificate fingerprint -> the profiles whose trust anchors issued it.
        self._anchor_profiles: dict[str, tuple[str, ...]] = {}

    def authenticate(self, ctx: Ctx, labelled: str | None) -> Principal:
        """Who is asking, for which profile; raises EstError 401/403 or the core's
        CertwrightError."""
        der = (ctx.tls or {}).get("client_cert_der")
        cert = x509.load_der_x509_certificate(der) if der else None
        if ctx.operation == REENROLL:
            return self._renewer(cert, labelled)
        credentials = basic(ctx.authorization) if ctx.authorization else None
        if credentials is not None:
            return self._password(credentials[0], credentials[1], labelled, ctx.client)
        if cert is not None:
            return self._anchored(cert, labelled, ctx.client)
        raise unauthenticated("authentication required: an EST credential (HTTP Basic) or "
                              "a client certificate this profile trusts")

    def _password(self, name: str, password: str, labelled: str | None,
                  client: str) -> Principal:
        try:
            # Audits a wrong password or a credential of another profile (403) itself.
            cred = self.credentials.verify(name, password, profile=labelled, client=client)
        except CredentialRefused:
            # One answer for an unknown name and a wrong password (and the same work).
            raise unauthenticated("wrong EST credential name or password") from None
        profile = cred.profile
        if not self.labels.accepts(profile):
            raise EstError(403, f"profile {profile!r} does not accept EST requests")
        if not estconfig.profile_settings(self.core.config.profiles[profile]).basic_auth:
            self.credentials.audit_refusal("profile takes no passwords", name,
                                           profile=profile, client=client)
            raise EstError(403, f"profile {profile!r} does not accept EST credentials")
        now = self.core.clock.now()
        return Principal(profile, Requester("est-credential", name), cred, password,
                         may_request=not cred.spent() and not cred.expired(now))

    def _valid_now(self, cert: x509.Certificate) -> bool:
        now = self.core.clock.now()
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
                p for p in self.labels.profiles.values()
                if any(_directly_issued_by(cert, a) for a in self.anchors.get(p, ())))
            if len(self._anchor_profiles) >= 4096:
                self._anchor_profiles.clear()
            self._anchor_profiles[fingerprint] = issued_under
        trusting = [p for p in issued_under if labelled is None or p == labelled]
        if not trusting or not self._valid_now(cert):
            self.credentials.audit_refusal("client certificate not trusted",
                                           f"sha256:{fingerprint}", profile=labelled,
                                           client=client)
            raise unauthenticated("the client certificate is not from a trust anchor of "
                                  "this profile; give an EST credential instead")
        if len(trusting) > 1:
            raise EstError(400, "several profiles trust this client certificate: name one "
                           "in the path (/.well-known/est/<label>/...)")
        return Principal(trusting[0], Requester("est-certificate", f"sha256:{fingerprint}"))

    def _renewer(self, cert: x509.Certificate | None, labelled: str | None) -> Principal:
        """RFC 7030 4.2.2 / 3.3.2: simplereenroll is authenticated by the certificate
        being renewed, presented as the TLS client certificate; it must be one this CA
        issued, current and not revoked, under the profile asked for. The core's record
        of exactly this certificate proves it was ours (the TLS layer verified the
        signature; verifying it again would cost an ECDSA verification per request)."""
        if cert is None:
            raise EstError(403, "simplereenroll needs the certificate being renewed as "
                           "the TLS client certificate")
        record = self.core.issued_here(cert)
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
        if not self.labels.accepts(profile):
            raise EstError(403, f"profile {profile!r} does not accept EST requests")
        return Principal(profile, Requester("est-certificate", record.serial), renews=cert)
