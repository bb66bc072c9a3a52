"""ACME's use of JWS (RFC 8555 section 6.2): flattened JSON, one signature, everything
protected, asymmetric algorithms only, a nonce and the request URL in the header.

Signature checks are joserfc's; this module enforces ACME's rules around them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import warnings
from typing import Any, cast

from joserfc import jws as jjws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey, thumbprint
from joserfc.registry import HeaderParameter

from certwright.acme.problems import AcmeProblem, malformed

# RFC 8555 6.2: "MUST NOT be none or a MAC-based algorithm". "Ed25519" is RFC 9864's
# fully-specified name for what clients still send as "EdDSA".
ALGORITHMS = ("RS256", "ES256", "ES384", "ES512", "EdDSA", "Ed25519")
_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
MAX_JWS_BYTES = 64 * 1024

_REGISTRY = jjws.JWSRegistry(
    header_registry={
        "nonce": HeaderParameter("ACME anti-replay nonce", "str"),
        "url": HeaderParameter("ACME request URL", "str"),
    },
    algorithms=list(ALGORITHMS),
)
# An RSA-4096 jwk alone is about 800 bytes of header; our own body limit bounds the rest.
_REGISTRY.max_header_length = 8 * 1024
_HMAC_REGISTRY = jjws.JWSRegistry(
    header_registry={"url": HeaderParameter("ACME request URL", "str")},
    algorithms=["HS256", "HS384", "HS512"],
)

AnyKey = RSAKey | ECKey | OKPKey
# urlsafe_b64decode skips characters outside the alphabet; RFC 7515 allows none.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64decode(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise malformed(f"{what} is not a base64url string")
    if not _BASE64URL.fullmatch(value):
        raise malformed(f"{what} must be base64url without padding (RFC 7515 section 2)")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise malformed(f"{what} is not valid base64url") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass(frozen=True)
class Envelope:
    """A parsed, not yet verified, flattened JWS."""

    raw: dict[str, Any]
    protected: dict[str, Any]
    payload: bytes  # b"" for POST-as-GET

    @property
    def alg(self) -> str:
        return str(self.protected["alg"])

    @property
    def nonce(self) -> str | None:
        n = self.protected.get("nonce")
        return n if isinstance(n, str) else None

    @property
    def url(self) -> str | None:
        u = self.protected.get("url")
        return u if isinstance(u, str) else None

    @property
    def kid(self) -> str | None:
        k = self.protected.get("kid")
        return k if isinstance(k, str) else None

    @property
    def jwk(self) -> dict[str, Any] | None:
        k = self.protected.get("jwk")
        return k if isinstance(k, dict) else None

    def json_payload(self) -> dict[str, Any]:
        if self.payload == b"":
            raise malformed("this request needs a JSON payload, not POST-as-GET")
        try:
            value = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the JWS payload is not JSON") from None
        if not isinstance(value, dict):
            raise malformed("the JWS payload is not a JSON object")
        return value


def parse(body: bytes | dict[str, Any], *, inner: bool = False) -> Envelope:
    """Parse a flattened JWS and check ACME's structural rules (not the signature)."""
    if isinstance(body, dict):
        obj: Any = body
    else:
        if len(body) > MAX_JWS_BYTES:
            raise AcmeProblem("malformed", f"request body larger than {MAX_JWS_BYTES} bytes",
                              413)
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the request body is not JSON") from None
    if not isinstance(obj, dict):
        raise malformed("the request body is not a JWS object")
    if "signatures" in obj:
        raise malformed("JWS with several signatures: use the flattened JSON serialization")
    if "header" in obj:
        raise malformed("JWS unprotected header is not allowed (RFC 8555 section 6.2)")
    unknown = set(obj) - {"protected", "payload", "signature"}
    if unknown or {"protected", "payload", "signature"} - set(obj):
        raise malformed("a flattened JWS has exactly protected, payload and signature")
    try:
        protected = json.loads(b64decode(obj["protected"], "protected header"))
    except (ValueError, UnicodeDecodeError):
        raise malformed("the protected header is not JSON") from None
    if not isinstance(protected, dict):
        raise malformed("the protected header is not a JSON object")
    payload = b64decode(obj["payload"], "payload")
    b64decode(obj["signature"], "signature")
    alg = protected.get("alg")
    if alg not in ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"JWS algorithm {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}")
    if "jwk" in protected and "kid" in protected:
        raise malformed("the protected header has both jwk and kid (RFC 8555 section 6.2)")
    if "jwk" not in protected and "kid" not in protected:
        raise malformed("the protected header has neither jwk nor kid")
    if "jwk" in protected and not isinstance(protected["jwk"], dict):
        raise malformed("the protected header's jwk is not a JSON Web Key object")
    if "kid" in protected and not isinstance(protected["kid"], str):
        raise malformed("the protected header's kid is not an account URL string")
    if not isinstance(protected.get("url"), str):
        raise unauthorized_url()
    if inner:
        if "nonce" in protected:
            raise malformed("the inner JWS of a key change must not have a nonce")
    elif not isinstance(protected.get("nonce"), str) or not protected["nonce"]:
        raise AcmeProblem("badNonce", "the protected header has no nonce")
    if "crit" in protected or protected.get("b64") is False:
        raise malformed("unsupported JWS header parameters (crit, b64)")
    return Envelope(obj, protected, payload)


def unauthorized_url() -> AcmeProblem:
    return AcmeProblem("unauthorized", "the protected header has no url", 403)


def import_key(jwk: dict[str, Any]) -> AnyKey:
    """Import an account public key, refusing weak or unsupported ones (badPublicKey)."""
    if not isinstance(jwk, dict) or any(k in jwk for k in ("d", "p", "q", "k")):
        raise AcmeProblem("badPublicKey", "the jwk must be a public key")
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise AcmeProblem("badPublicKey", "the jwk is not a valid public key") from None
    if isinstance(key, RSAKey):
        bits = key.raw_value.key_size
        if bits < 2048 or bits > 8192:
            raise AcmeProblem("badPublicKey", f"RSA account keys must have 2048 to 8192 bits, "
                              f"not {bits}")
    elif isinstance(key, ECKey):
        if key.curve_name not in ("P-256", "P-384", "P-521"):
            raise AcmeProblem("badPublicKey", f"curve {key.curve_name} is not supported")
    elif isinstance(key, OKPKey):
        if key.curve_name != "Ed25519":
            raise AcmeProblem("badPublicKey", f"curve {key.curve_name} is not supported")
    else:
        raise AcmeProblem("badPublicKey", "account keys must be RSA, EC or Ed25519 keys")
    return key


def spki_der(key: AnyKey) -> bytes:
    """The key's SubjectPublicKeyInfo, to compare an account key with a certificate's."""
    from cryptography.hazmat.primitives import serialization

    raw: Any = key.raw_value
    public = raw.public_key() if hasattr(raw, "private_bytes") else raw
    return bytes(public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))


def key_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: identifies the account key."""
    return str(thumbprint(public_jwk(jwk)))


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                "OKP": ("crv", "kty", "x")}.get(str(jwk.get("kty")), ())
    return {k: jwk[k] for k in required if k in jwk}


def verify(env: Envelope, key: AnyKey) -> None:
    """Check the signature, and that the algorithm fits the key (badSignatureAlgorithm)."""
    alg = env.alg
    if isinstance(key, RSAKey) and alg != "RS256":
        raise AcmeProblem("badSignatureAlgorithm", f"{alg} does not fit an RSA key; use RS256")
    if isinstance(key, ECKey) and _CURVE_FOR_ALG.get(alg) != key.curve_name:
        raise AcmeProblem("badSignatureAlgorithm",
                          f"{alg} does not fit a {key.curve_name} key")
    if isinstance(key, OKPKey) and alg not in ("EdDSA", "Ed25519"):
        raise AcmeProblem("badSignatureAlgorithm", f"{alg} does not fit an Ed25519 key")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" is still what clients send
            jjws.deserialize_json(cast(Any, env.raw), key, registry=_REGISTRY)
    except (JoseError, ValueError, TypeError):
        raise malformed("JWS signature does not verify") from None


def verify_hmac(obj: Any, hmac_key: bytes) -> Envelope:
    """Verify an External Account Binding JWS (RFC 8555 7.3.4): MAC-signed, no nonce."""
    if not isinstance(obj, dict) or set(obj) != {"protected", "payload", "signature"}:
        raise malformed("externalAccountBinding is not a flattened JWS")
    protected = json.loads(b64decode(obj["protected"], "EAB protected header"))
    if not isinstance(protected, dict) or protected.get("alg") not in ("HS256", "HS384",
                                                                       "HS512"):
        raise AcmeProblem("badSignatureAlgorithm",
                          "externalAccountBinding must use HS256, HS384 or HS512")
    if "nonce" in protected:
        raise malformed("externalAccountBinding must not have a nonce")
    from joserfc.jwk import OctKey

    try:
        jjws.deserialize_json(cast(Any, obj), OctKey.import_key(hmac_key),
                              registry=_HMAC_REGISTRY)
    except (JoseError, ValueError, TypeError):
        raise unauthorized_eab() from None
    return Envelope(obj, protected, b64decode(obj["payload"], "EAB payload"))


def unauthorized_eab() -> AcmeProblem:
    return AcmeProblem("unauthorized", "externalAccountBinding signature does not verify", 403)
