"""The directory and nonces (RFC 8555 sections 7.1.1, 7.2 and 6.5)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import secrets
import struct
from typing import Any

from certwright.acme import config as acmeconfig
from certwright.acme.exchange import Ctx, Reply
from certwright.acme.ports import AcmeStorage
from certwright.clock import Clock


class NonceIssuer:
    """Nonces that need no store write to hand out (RFC 8555 6.5).

    A nonce is base64url(expiry || 8 random bytes || HMAC-SHA256(key, expiry || random)
    cut to 16 bytes), with the key in the store's settings, shared by every replica. A
    server hands nonces out from memory (a HEAD newNonce writes nothing), and checks a
    presented nonce's MAC and expiry from memory too: a forged, mangled or expired nonce
    never reaches the database. Only a redemption is written: the nonce goes into
    ``acme_nonces`` under its primary key, so of any number of requests carrying it, on
    any replica, exactly one inserts it; the others are replays. Rows are kept until the
    nonce has expired, after which its MAC check refuses it anyway, and then swept.
    """

    _EXPIRY = struct.Struct(">Q")
    RAW_SIZE = 8 + 8 + 16

    def __init__(self, key: bytes, clock: Clock) -> None:
        self._key = key
        self._clock = clock

    def issue(self, lifetime: dt.timedelta) -> str:
        expiry = int((self._clock.now() + lifetime).timestamp())
        head = self._EXPIRY.pack(expiry) + secrets.token_bytes(8)
        mac = hmac.digest(self._key, head, "sha256")[:16]
        return base64.urlsafe_b64encode(head + mac).rstrip(b"=").decode()

    def check(self, value: str) -> dt.datetime | None:
        """The nonce's expiry if this server family issued it and it has not expired."""
        if len(value) != 43:  # 32 bytes, unpadded base64url
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=")
        except (binascii.Error, ValueError):
            return None
        head, mac = raw[:16], raw[16:]
        if len(raw) != self.RAW_SIZE or not hmac.compare_digest(
                hmac.digest(self._key, head, "sha256")[:16], mac):
            return None
        expiry = dt.datetime.fromtimestamp(self._EXPIRY.unpack(head[:8])[0], dt.UTC)
        return expiry if expiry > self._clock.now() else None


class Nonces:
    """Issue from memory, redeem once in the store."""

    def __init__(self, storage: AcmeStorage, clock: Clock, lifetime: dt.timedelta) -> None:
        self.storage = storage
        self.lifetime = lifetime
        self.issuer = NonceIssuer(storage.nonce_key(), clock)

    def issue(self) -> str:
        return self.issuer.issue(self.lifetime)

    def redeem(self, value: str) -> bool:
        """True exactly once per issued, unexpired nonce, across every replica."""
        expiry = self.issuer.check(value)
        return expiry is not None and self.storage.redeem_nonce(value, expiry)

    def redeem_and_issue(self, value: str) -> tuple[bool, str]:
        """``redeem(value)``, and a fresh nonce for the reply. The fresh nonce comes even
        when the redemption fails (RFC 8555 6.5: a badNonce error carries one too)."""
        return self.redeem(value), self.issue()


def directory(ctx: Ctx) -> Reply:
    acme = acmeconfig.profile_settings(ctx.profile)
    meta: dict[str, Any] = {"externalAccountRequired": acme.eab_required,
                            "caaIdentities": list(acme.caa_identities)}
    if acme.terms_of_service:
        meta["termsOfService"] = acme.terms_of_service
    if acme.website:
        meta["website"] = acme.website
    return Reply(body={
        "newNonce": f"{ctx.base}/new-nonce",
        "newAccount": f"{ctx.base}/new-account",
        "newOrder": f"{ctx.base}/new-order",
        "revokeCert": f"{ctx.base}/revoke-cert",
        "keyChange": f"{ctx.base}/key-change",
        "renewalInfo": f"{ctx.base}/renewal-info",
        "meta": meta,
    })


def new_nonce(ctx: Ctx) -> Reply:
    # RFC 8555 7.2: 200 for HEAD, 204 for GET.
    return Reply(200 if ctx.method == "HEAD" else 204)
