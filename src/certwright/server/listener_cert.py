"""The HTTPS listener's own certificate, issued by the CA it serves.

It is issued through the Authority (so it is stored, audited and revocable like any
other) under a built-in profile that allows exactly the configured hostnames, and
renewed at start when a third of its lifetime is left or the hostnames changed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certwright.ca.authority import AuditContext
from certwright.ca.policy import Issue
from certwright.ca.profiles import NameRules, Profile, Validity
from certwright.ca.service import CertificateAuthority
from certwright.pki import keys
from certwright.pki.names import IPAddress, Names, parse_name

LIFETIME = dt.timedelta(days=30)


def _names(hostnames: tuple[str, ...]) -> Names:
    dns: list[str] = []
    ips: list[IPAddress] = []
    for h in hostnames:
        n = parse_name(h)
        dns += n.dns
        ips += n.ip
    return Names(dns=tuple(dns), ip=tuple(ips))


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


def ensure(ca: CertificateAuthority, tls_dir: Path) -> tuple[Path, Path]:
    """Return (certificate chain path, key path), issuing a new pair when needed."""
    hostnames = ca.config.server.hostnames
    names = _names(hostnames)
    cert_path, key_path = paths(tls_dir)
    now = ca.clock.now()
    if key_path.exists() and _current(cert_path, names, now):
        return cert_path, key_path
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(names.general_names()), critical=False)
           .sign(key, keys.signature_hash(key)))
    profile = Profile(
        description="the server's own HTTPS listener",
        names=NameRules(dns=names.dns, ip=tuple(_host_networks(names)), keep_cn=False),
        validity=Validity(default=LIFETIME, max=LIFETIME),
        key_usage=("digital_signature",),
        extended_key_usage=("server_auth",),
    )
    start = now.replace(microsecond=0) - dt.timedelta(minutes=5)
    issue = Issue(profile_name="_https-listener", profile=profile, csr=csr,
                  key=keys.describe(key.public_key()), names=names, common_name=None,
                  not_before=start, not_after=start + LIFETIME)
    prepared = ca.authority.prepare(issue)
    _, cert = ca.authority.issue(prepared, AuditContext(
        actor="system", protocol="internal", requester="system:https-listener"))
    keys.write_secret_file(key_path, keys.private_key_pem(key))
    chain = cert.public_bytes(serialization.Encoding.PEM) + b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in ca.chain)
    keys.write_public_file(cert_path, chain)
    return cert_path, key_path


def _host_networks(names: Names) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a) for a in names.ip]
