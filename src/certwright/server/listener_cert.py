"""The HTTPS listener's own certificate, issued by the CA it serves.

The server enrolls for it like any front-end's client does: one EnrollmentRequest to
the core under the built-in profile ``_https-listener`` (``ca/builtin.py``: exactly the
configured hostnames and the listener's literal IP address, 30 days, TLS server usages),
so the RA decides it and the Authority signs, stores and audits it on the path every
certificate takes. It is renewed at start when a third of its lifetime is left or the
names changed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol as TypingProtocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certwright import registry
from certwright.ca import builtin
from certwright.ca.policy import EnrollmentRequest, Requester
from certwright.ca.profiles import Config
from certwright.ca.service import Held, Issued
from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki import keys
from certwright.pki.names import Names

LIFETIME = builtin.LISTENER_LIFETIME
REQUESTER = Requester("system", "https-listener")


class ListenerCore(TypingProtocol):
    """What this module asks of the core."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    def enroll(self, request: EnrollmentRequest) -> Issued | Held: ...


def _current(cert_path: Path, names: Names, now: dt.datetime) -> bool:
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v).lower() for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    want = set(names.dns) | {str(a) for a in names.ip}
    left = leaf.not_valid_after_utc - now
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    return have == want and left > lifetime / 3


def paths(tls_dir: Path) -> tuple[Path, Path]:
    """(certificate chain path, key path) of the listener in ``tls_dir``."""
    return tls_dir / "server.pem", tls_dir / "server.key"


def ensure(ca: ListenerCore, tls_dir: Path) -> tuple[Path, Path]:
    """Return (certificate chain path, key path), enrolling for a new pair when needed."""
    names = builtin.listener_names(builtin.listener_hostnames(ca.config.server))
    cert_path, key_path = paths(tls_dir)
    if key_path.exists() and _current(cert_path, names, ca.clock.now()):
        return cert_path, key_path
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(names.general_names()), critical=False)
           .sign(key, keys.signature_hash(key)))
    out = ca.enroll(EnrollmentRequest(profile=builtin.HTTPS_LISTENER, csr=csr,
                                      requester=REQUESTER, protocol=registry.INTERNAL))
    if not isinstance(out, Issued):  # the built-in profile approves automatically
        raise CertwrightError(ErrorKind.INTERNAL,
                              f"the HTTPS listener's certificate was held: {out.reason}")
    keys.write_secret_file(key_path, keys.private_key_pem(key))
    keys.write_public_file(cert_path, out.fullchain_pem())
    return cert_path, key_path
