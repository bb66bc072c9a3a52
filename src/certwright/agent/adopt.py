"""``agent adopt``: turn a certificate installed by hand into a spec, so it is renewed.

The spec takes the certificate's names (as a static list), its key type, and the
directory and file names it already lives at; the issuer is the one the operator names
(the certificate's AIA caIssuers URL is shown to help, since it names the CA but not its
enrollment endpoint). The certificate is recorded as enrolled, with its serial and dates,
so it renews on the lifetime rule; at its first renewal the existing files are moved into
the versioned store without changing a byte (``agent.install``).
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from certwright.agent import fs, renewal, verify
from certwright.agent.spec import Spec, parse_spec
from certwright.agent.state import State
from certwright.errors import CertwrightError, ErrorKind


def _config(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.CONFIG, detail)


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [str(d.access_location.value) for d in aia
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS]


def key_spec(key: fs.AgentKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        return {"type": "rsa", "bits": key.key_size}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"type": "ed25519"}
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    return {"type": "ecdsa", "curve": curve}


def adopt(cert_file: Path, key_file: Path, *, name: str, issuer: dict[str, Any],
          trust_anchor: Path, state: State, now: dt.datetime,
          rng: random.Random, record: bool = True) -> tuple[Spec, dict[str, Any]]:
    """Build the spec (validated) and, with ``record``, record the certificate as enrolled;
    return (spec, document)."""
    cert_file, key_file = cert_file.absolute(), key_file.absolute()
    if cert_file.parent != key_file.parent:
        raise _config(f"{cert_file} and {key_file} are in different directories: the agent "
                      "switches key and certificate together inside one directory")
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except ValueError:
        raise _config(f"{cert_file}: not a PEM certificate") from None
    key = fs.load_key(key_file.read_bytes(), str(key_file))
    if verify.spki(cert) != verify.spki(key):
        raise _config(f"{key_file} is not the key of {cert_file}")
    if not issuer:
        aia = ca_issuers_urls(cert)
        hint = f" (its AIA names the CA at {', '.join(aia)})" if aia else ""
        raise _config(f"name the issuer to renew from with --acme-directory or --est-url{hint}")
    canonical = verify.certificate_names(cert)
    names = [n.split(":", 1)[1] for n in canonical]
    if not names:
        raise _config(f"{cert_file} has no subjectAltName to derive names from")
    doc: dict[str, Any] = {
        "name": name,
        "issuer": issuer,
        "names": [{"static": names}],
        "key": key_spec(key),
        "output": {"directory": str(cert_file.parent), "key": key_file.name,
                   "cert": cert_file.name},
        "trust_anchor": str(trust_anchor.absolute()),
    }
    spec = parse_spec(yaml.safe_load(yaml.safe_dump(doc)), f"adopted {cert_file}")
    if state.get(spec.name) is not None:
        raise _config(f"a spec named {spec.name!r} is already recorded in the state directory")
    if not record:
        return spec, doc
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    state.record_success(
        spec=spec.name, protocol=spec.issuer.protocol, issuer=spec.issuer.url,
        profile=spec.issuer.profile, validation="adopted (enrolled by hand)", account=None,
        names={n: [f"adopted {cert_file}"] for n in canonical},
        serial=f"{cert.serial_number:x}", not_before=nb, not_after=na,
        next_renewal=renewal.lifetime_renewal(nb, na, spec.renewal, rng),
        ari_next_check=None, version="adopted",
        record={"adopted_from": {"certificate": str(cert_file), "key": str(key_file),
                                 "ca_issuers": ca_issuers_urls(cert)},
                "spec": spec.model_dump(mode="json", by_alias=True),
                "certificate": cert.public_bytes(serialization.Encoding.PEM).decode()},
        at=now)
    return spec, doc

