"""Check an issued certificate before anything is installed.

Four checks, each raising CertwrightError (kind REJECTED_IDENTIFIER for names, CONFIG
for the rest) with the rule it broke: the certificate's public key is our key
(``check.key``); its names are exactly the names the spec derived, no more and no fewer
(``check.names``: this is what catches a CA template that adds or drops a SAN); its
chain verifies to the spec's trust anchor (``check.chain``); it is valid now
(``check.validity``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from certwright.agent.fs import AgentKey
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki.names import from_general_names


def _fail(detail: str, rule: str, kind: ErrorKind = ErrorKind.CONFIG) -> CertwrightError:
    return CertwrightError(kind, detail, rule=rule)


def spki(obj: AgentKey | x509.Certificate) -> bytes:
    public = obj.public_key()
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = from_general_names(ext.value)
    return [f"dns:{n}" for n in names.dns] + [f"ip:{a}" for a in names.ip] + \
        [f"uri:{u}" for u in names.uri] + [f"email:{e}" for e in names.email]


def load_anchors(path: Path) -> list[x509.Certificate]:
    try:
        anchors = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise _fail(f"trust anchor {path}: no such file", "trust_anchor") from None
    except ValueError:
        raise _fail(f"trust anchor {path}: no PEM certificate in it", "trust_anchor") from None
    return anchors


def check_issued(leaf: x509.Certificate, chain: Sequence[x509.Certificate], key: AgentKey,
                 names: Sequence[str], anchors: Sequence[x509.Certificate], now: dt.datetime
                 ) -> None:
    if spki(leaf) != spki(key):
        raise _fail("the certificate's public key is not the key the agent generated",
                    "check.key")
    got = certificate_names(leaf)
    want = set(names)
    if set(got) != want:
        extra = sorted(set(got) - want)
        missing = sorted(want - set(got))
        raise _fail("the certificate's names differ from the spec's"
                    + (f"; not derived by the spec: {', '.join(extra)}" if extra else "")
                    + (f"; missing: {', '.join(missing)}" if missing else ""),
                    "check.names", ErrorKind.REJECTED_IDENTIFIER)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise _fail(f"the certificate is not valid now: valid from "
                    f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
                    f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC", "check.validity")
    # The RFC 5280 path to one of the anchors, with the CA/B profile's checks on the CA
    # certificates; the leaf's own extensions were judged by the names check above and by
    # the CA's profile, so any end-entity extensions are accepted here.
    policies = verification.ExtensionPolicy
    verifier = (verification.PolicyBuilder()
                .store(verification.Store(list(anchors)))
                .time(now)
                .extension_policies(ca_policy=policies.webpki_defaults_ca(),
                                    ee_policy=policies.permit_all())
                .build_client_verifier())
    try:
        verifier.verify(leaf, list(chain))
    except verification.VerificationError as e:
        raise _fail(f"the certificate's chain does not verify to the trust anchor: {e}",
                    "check.chain") from None
