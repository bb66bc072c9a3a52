"""A small ACME client for protocol tests: it signs what it is told to, including what
a well-behaved client never would (that is its purpose). Interop with real clients is
tested with certbot and lego."""

from __future__ import annotations

import base64
import json
import ssl
import warnings
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.registry import HeaderParameter

REGISTRY = jws.JWSRegistry(
    header_registry={"nonce": HeaderParameter("nonce", "str"),
                     "url": HeaderParameter("url", "str")},
    algorithms=["RS256", "ES256", "ES384", "ES512", "EdDSA", "HS256"],
    strict_check_header=False,
)
REGISTRY.max_header_length = 8 * 1024

Key = ECKey | RSAKey | OKPKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_of(key: Key) -> str:
    if isinstance(key, RSAKey):
        return "RS256"
    if isinstance(key, OKPKey):
        return "EdDSA"
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[key.curve_name]


def sign(key: Key | OctKey, protected: dict[str, Any], payload: bytes) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return dict(jws.serialize_json({"protected": protected}, payload, key,
                                       registry=REGISTRY))


class Client:
    def __init__(self, directory_url: str, verify: str, key: Key | None = None) -> None:
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=verify), timeout=30,
                                 trust_env=False)
        self.directory = self.http.get(directory_url).json()
        self.key: Key = key or ECKey.generate_key("P-256")
        self.kid: str | None = None

    def close(self) -> None:
        self.http.close()

    def nonce(self) -> str:
        r = self.http.head(self.directory["newNonce"])
        assert r.status_code == 200, r
        return r.headers["Replay-Nonce"]

    def jws(self, url: str, payload: Any, *, key: Key | None = None, use_jwk: bool = False,
            nonce: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        key = key or self.key
        protected: dict[str, Any] = {"alg": alg_of(key), "url": url,
                                     "nonce": nonce if nonce is not None else self.nonce()}
        if use_jwk or self.kid is None:
            protected["jwk"] = key.as_dict(private=False)
        else:
            protected["kid"] = self.kid
        protected.update(extra or {})
        body = b"" if payload is None else (payload if isinstance(payload, bytes)
                                            else json.dumps(payload).encode())
        return sign(key, protected, body)

    def post(self, url: str, payload: Any = None, **kwargs: Any) -> httpx.Response:
        body = self.jws(url, payload, **kwargs)
        return self.raw(url, body)

    def raw(self, url: str, body: Any, content_type: str = "application/jose+json"
            ) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(url, content=data, headers={"Content-Type": content_type})

    def register(self, **payload: Any) -> httpx.Response:
        payload.setdefault("termsOfServiceAgreed", True)
        r = self.post(self.directory["newAccount"], payload, use_jwk=True)
        if r.status_code in (200, 201):
            self.kid = r.headers["Location"]
        return r

    def new_order(self, *names: str, **extra: Any) -> httpx.Response:
        idents = [{"type": "ip" if n.replace(".", "").isdigit() or ":" in n else "dns",
                   "value": n} for n in names]
        return self.post(self.directory["newOrder"], {"identifiers": idents, **extra})

    def thumbprint(self) -> str:
        from joserfc.jwk import thumbprint

        return str(thumbprint(self.key.as_dict(private=False)))

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint()}"
