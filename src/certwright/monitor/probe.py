"""TLS probes of declared endpoints: what the endpoint serves, not whether a browser
would accept it (verification is off on purpose: an expired or foreign certificate is
exactly what the probe must see). "Issued by us" is decided by the signature."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import ssl
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certwright.errors import CertwrightError
from certwright.model.certificates import format_serial
from certwright.model.monitor import Probe
from certwright.monitor.config import ExpectedEndpoint
from certwright.pki.names import from_general_names

__all__ = ["probe_all", "probe_endpoint"]

MAX_PARALLEL = 16


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def probe_endpoint(address: str, sni: str | None, issuing: x509.Certificate,
                   timeout: float) -> Probe:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    server_name = sni if sni is not None else (None if _is_ip(host) else host)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # see the module docstring
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_name) as conn:
            der = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        return Probe(error=f"{type(e).__name__}: {e}")
    if not der:
        return Probe(error="no certificate served")
    cert = x509.load_der_x509_certificate(der)
    try:
        cert.verify_directly_issued_by(issuing)
        ours = True
    except (ValueError, TypeError, InvalidSignature):
        ours = False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(from_general_names(san).as_strings())
    except (x509.ExtensionNotFound, CertwrightError):
        names = ()
    return Probe(serial=format_serial(cert.serial_number), names=names,
                 not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                 issued_by_us=ours, issuer=cert.issuer.rfc4514_string())


def probe_all(endpoints: Mapping[str, ExpectedEndpoint], issuing: x509.Certificate,
              timeout: float) -> dict[str, Probe]:
    """Probe every endpoint, a few at a time; keyed like the expectations."""
    if not endpoints:
        return {}
    with concurrent.futures.ThreadPoolExecutor(min(MAX_PARALLEL, len(endpoints))) as pool:
        futures = {k: pool.submit(probe_endpoint, e.address, e.sni, issuing, timeout)
                   for k, e in endpoints.items()}
        return {k: f.result() for k, f in futures.items()}
