"""ACME protocol state in the store: nonces, accounts, EAB keys, orders, authorizations,
challenges. Rows are mapped to frozen dataclasses here and nowhere else.

Races between replicas are settled by the database: a nonce is redeemed by a DELETE
that only one transaction can win; an order moves ready -> processing by a conditional
UPDATE that only one finalize call can win; a key belongs to one account per profile by
a unique constraint.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hmac
import json
import secrets
import struct
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from certwright.clock import Clock
from certwright.store import schema
from certwright.store.repo import Store

ACCOUNTS = schema.acme_accounts
ORDERS = schema.acme_orders
AUTHZS = schema.acme_authorizations
CHALLENGES = schema.acme_challenges
NONCES = schema.acme_nonces
EAB = schema.acme_eab_keys


# Statements of the per-request paths, built once (SQLAlchemy then skips building them and
# their cache keys on every call).
_NONCE_SWEEP = NONCES.delete().where(
    NONCES.c.expires_at < sa.bindparam("now", type_=NONCES.c.expires_at.type))
_NONCE_KEY_SETTING = "acme.nonce_key"
_ACCOUNT_BY_ID = sa.select(ACCOUNTS).where(ACCOUNTS.c.id == sa.bindparam("id"))
_AUTHZ_BY_ID = sa.select(AUTHZS).where(AUTHZS.c.id == sa.bindparam("id"))
_CHALLENGES_OF_AUTHZ = (sa.select(CHALLENGES).where(CHALLENGES.c.authz_id == sa.bindparam("id"))
                        .order_by(CHALLENGES.c.type))
_CHALLENGE_BY_ID = sa.select(CHALLENGES).where(CHALLENGES.c.id == sa.bindparam("id"))
_AUTHZ_STATE = (sa.select(AUTHZS.c.status, AUTHZS.c.expires_at)
                .where(AUTHZS.c.id == sa.bindparam("id")))
_AUTHZ_STATES = (sa.select(AUTHZS.c.status, AUTHZS.c.expires_at)
                 .where(AUTHZS.c.id.in_(sa.bindparam("ids", expanding=True))))
_CHALLENGE_START = (CHALLENGES.update()
                    .where(CHALLENGES.c.id == sa.bindparam("key"), CHALLENGES.c.status == "pending")
                    .values(status="processing"))
_CHALLENGE_FINISH = (CHALLENGES.update().where(CHALLENGES.c.id == sa.bindparam("key"))
                     .values(status=sa.bindparam("new_status"),
                             validated_at=sa.bindparam("at"),
                             error=sa.bindparam("new_error")))
_AUTHZ_VALIDATED = (AUTHZS.update()
                    .where(AUTHZS.c.id == sa.bindparam("key"), AUTHZS.c.status == "pending")
                    .values(status="valid", expires_at=sa.bindparam("expires")))
_AUTHZ_FAILED = (AUTHZS.update()
                 .where(AUTHZS.c.id == sa.bindparam("key"), AUTHZS.c.status == "pending")
                 .values(status="invalid"))
_AUTHZ_REUSE = (sa.select(AUTHZS.c.id).where(
    AUTHZS.c.account_id == sa.bindparam("account_id"), AUTHZS.c.profile == sa.bindparam("profile"),
    AUTHZS.c.identifier_type == sa.bindparam("type"),
    AUTHZS.c.identifier_value == sa.bindparam("value"),
    AUTHZS.c.wildcard == sa.bindparam("wildcard"),
    AUTHZS.c.status.in_(("valid", "pending")),
    AUTHZS.c.expires_at > sa.bindparam("after", type_=AUTHZS.c.expires_at.type))
    .order_by(AUTHZS.c.status.desc(), AUTHZS.c.expires_at.desc())  # valid first
    .limit(1))
_AUTHZ_INSERT = AUTHZS.insert()
_CHALLENGE_INSERT = CHALLENGES.insert()
_ORDER_INSERT = ORDERS.insert()
_ORDER_BY_ID = sa.select(ORDERS).where(ORDERS.c.id == sa.bindparam("id"))
_ORDER_MOVE = (ORDERS.update()
               .where(ORDERS.c.id == sa.bindparam("key"), ORDERS.c.status == sa.bindparam("was"))
               .values(status=sa.bindparam("new_status"), error=sa.bindparam("new_error")))
_ORDER_BEGIN_FINALIZE = (ORDERS.update()
                         .where(ORDERS.c.id == sa.bindparam("key"), ORDERS.c.status == "ready")
                         .values(status="processing"))
_ORDER_ISSUED = (ORDERS.update().where(ORDERS.c.id == sa.bindparam("key"))
                 .values(status="valid", serial=sa.bindparam("new_serial")))
_ORDERS_SINCE = sa.select(sa.func.count()).select_from(ORDERS).where(
    ORDERS.c.created_at >= sa.bindparam("since", type_=ORDERS.c.created_at.type))
_ORDERS_OF_ACCOUNT_SINCE = _ORDERS_SINCE.where(ORDERS.c.account_id == sa.bindparam("account_id"))
_ORDERS_OF_PROFILE_SINCE = _ORDERS_SINCE.where(ORDERS.c.profile == sa.bindparam("profile"))
_PENDING_AUTHZS = sa.select(sa.func.count()).select_from(AUTHZS).where(
    AUTHZS.c.account_id == sa.bindparam("account_id"), AUTHZS.c.status == "pending",
    AUTHZS.c.expires_at > sa.bindparam("now", type_=AUTHZS.c.expires_at.type))


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


def new_id() -> str:
    return secrets.token_urlsafe(12)


@dataclasses.dataclass(frozen=True)
class Identifier:
    type: str  # "dns" | "ip"
    value: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclasses.dataclass(frozen=True)
class Account:
    id: str
    profile: str
    thumbprint: str
    jwk: dict[str, Any]
    status: str  # valid | deactivated | revoked
    contact: tuple[str, ...]
    tos_agreed: bool
    eab_kid: str | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Challenge:
    id: str
    authz_id: str
    type: str
    token: str
    status: str  # pending | processing | valid | invalid
    validated_at: dt.datetime | None
    error: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Authorization:
    id: str
    account_id: str
    profile: str
    identifier: Identifier
    wildcard: bool
    status: str  # pending | valid | invalid | deactivated | expired | revoked
    expires_at: dt.datetime
    created_at: dt.datetime
    challenges: tuple[Challenge, ...] = ()


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    account_id: str
    profile: str
    status: str  # pending | ready | processing | valid | invalid
    identifiers: tuple[Identifier, ...]
    authz_ids: tuple[str, ...]
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    expires_at: dt.datetime
    error: dict[str, Any] | None
    serial: str | None
    request_id: str | None
    created_at: dt.datetime
    replaces: str | None = None


def _account(r: Any) -> Account:
    return Account(r.id, r.profile, r.thumbprint, json.loads(r.jwk), r.status,
                   tuple(json.loads(r.contact)), bool(r.tos_agreed), r.eab_kid, r.created_at)


def _challenge(r: Any) -> Challenge:
    return Challenge(r.id, r.authz_id, r.type, r.token, r.status, r.validated_at,
                     json.loads(r.error) if r.error else None)


def _authz(r: Any, challenges: tuple[Challenge, ...] = ()) -> Authorization:
    return Authorization(r.id, r.account_id, r.profile,
                         Identifier(r.identifier_type, r.identifier_value), bool(r.wildcard),
                         r.status, r.expires_at, r.created_at, challenges)


def _order(r: Any) -> Order:
    return Order(r.id, r.account_id, r.profile, r.status,
                 tuple(Identifier(i["type"], i["value"]) for i in json.loads(r.identifiers)),
                 tuple(json.loads(r.authorizations)), r.not_before, r.not_after, r.expires_at,
                 json.loads(r.error) if r.error else None, r.serial, r.request_id,
                 r.created_at, r.replaces)


class AcmeState:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.nonces = NonceIssuer(self._nonce_key(), clock)
        insert = (postgresql.insert(NONCES) if store.engine.dialect.name == "postgresql"
                  else sqlite.insert(NONCES))
        # RETURNING tells whether the row went in (psycopg reports no rowcount for it).
        self._nonce_redeem = insert.on_conflict_do_nothing(
            index_elements=[NONCES.c.value]).returning(NONCES.c.value)
        self._redeemed = 0

    def _nonce_key(self) -> bytes:
        """The replicas' shared nonce MAC key: made by the first server that needs it."""
        with self.store.state_write() as conn:
            value = self.store.setting(_NONCE_KEY_SETTING, conn)
            if value is None:
                value = secrets.token_hex(32)
                self.store.put_setting(conn, _NONCE_KEY_SETTING, value)
        return bytes.fromhex(value)

    # -- nonces (RFC 8555 6.5) ----------------------------------------------------------

    def new_nonce(self, lifetime: dt.timedelta) -> str:
        return self.nonces.issue(lifetime)

    def redeem_nonce(self, value: str) -> bool:
        """True exactly once per issued, unexpired nonce, across every replica."""
        expiry = self.nonces.check(value)
        if expiry is None:
            return False
        with self.store.state_write() as conn:
            redeemed = conn.execute(self._nonce_redeem,
                                    {"value": value, "expires_at": expiry}).first() is not None
            self._redeemed += 1
            if self._redeemed % 64 == 0:
                # Now and then, forget nonces that have expired: their MAC check refuses
                # them from now on, so their rows are no longer needed.
                conn.execute(_NONCE_SWEEP, {"now": self.clock.now()})
        return redeemed

    def redeem_and_issue_nonce(self, value: str, lifetime: dt.timedelta) -> tuple[bool, str]:
        """``redeem_nonce(value)``, and a fresh nonce for the reply. The fresh nonce comes
        even when the redemption fails (RFC 8555 6.5: a badNonce error carries one too)."""
        return self.redeem_nonce(value), self.nonces.issue(lifetime)

    # -- accounts -----------------------------------------------------------------------

    def account(self, account_id: str) -> Account | None:
        with self.store.read() as conn:
            r = conn.execute(_ACCOUNT_BY_ID, {"id": account_id}).first()
        return _account(r) if r else None

    def account_by_key(self, profile: str, thumbprint: str) -> Account | None:
        with self.store.read() as conn:
            r = conn.execute(sa.select(ACCOUNTS).where(
                ACCOUNTS.c.profile == profile, ACCOUNTS.c.thumbprint == thumbprint)).first()
        return _account(r) if r else None

    def create_account(self, *, profile: str, thumbprint: str, jwk: dict[str, Any],
                       contact: list[str], tos_agreed: bool, eab_kid: str | None
                       ) -> tuple[Account, bool]:
        """Create the account for this key, or return the existing one (created=False).

        With EAB the key is bound in the same transaction: one EAB key, one account.
        """
        now = self.clock.now()
        account_id = new_id()
        try:
            with self.store.state_write(savepoint=True) as conn:
                if eab_kid is not None:
                    bound = conn.execute(EAB.update().where(
                        EAB.c.kid == eab_kid, EAB.c.account_id.is_(None)
                    ).values(account_id=account_id))
                    if bound.rowcount != 1:
                        raise EabAlreadyUsed(eab_kid)
                conn.execute(ACCOUNTS.insert().values(
                    id=account_id, profile=profile, thumbprint=thumbprint,
                    jwk=json.dumps(jwk, sort_keys=True), status="valid",
                    contact=json.dumps(contact), tos_agreed=tos_agreed, eab_kid=eab_kid,
                    created_at=now))
        except sa.exc.IntegrityError:
            existing = self.account_by_key(profile, thumbprint)
            if existing is None:
                raise
            return existing, False
        account = self.account(account_id)
        assert account is not None
        return account, True

    def update_account(self, account_id: str, **values: Any) -> Account:
        if "contact" in values:
            values["contact"] = json.dumps(list(values["contact"]))
        if "jwk" in values:
            values["jwk"] = json.dumps(values["jwk"], sort_keys=True)
        with self.store.state_write(savepoint=True) as conn:
            conn.execute(ACCOUNTS.update().where(ACCOUNTS.c.id == account_id).values(**values))
        account = self.account(account_id)
        assert account is not None
        return account

    def deactivate_account(self, account_id: str) -> Account:
        """RFC 8555 7.3.6: deactivation also deactivates the account's pending authzs."""
        with self.store.state_write() as conn:
            conn.execute(ACCOUNTS.update().where(ACCOUNTS.c.id == account_id)
                         .values(status="deactivated"))
            conn.execute(AUTHZS.update().where(AUTHZS.c.account_id == account_id,
                                               AUTHZS.c.status.in_(("pending", "valid")))
                         .values(status="deactivated"))
        account = self.account(account_id)
        assert account is not None
        return account

    # -- external account binding -------------------------------------------------------

    def create_eab(self, profile: str, hmac_key: str, expires_at: dt.datetime | None) -> str:
        kid = "kid-" + secrets.token_urlsafe(12)
        with self.store.state_write() as conn:
            conn.execute(EAB.insert().values(kid=kid, profile=profile, hmac_key=hmac_key,
                                             created_at=self.clock.now(),
                                             expires_at=expires_at))
        return kid

    def eab(self, kid: str) -> tuple[str, str, dt.datetime | None, str | None] | None:
        """(profile, hmac_key, expires_at, account_id) of an EAB key id."""
        with self.store.read() as conn:
            r = conn.execute(sa.select(EAB).where(EAB.c.kid == kid)).first()
        return (r.profile, r.hmac_key, r.expires_at, r.account_id) if r else None

    # -- authorizations and challenges ---------------------------------------------------

    def authorization(self, authz_id: str) -> Authorization | None:
        with self.store.read() as conn:
            r = conn.execute(_AUTHZ_BY_ID, {"id": authz_id}).first()
            if r is None:
                return None
            chals = conn.execute(_CHALLENGES_OF_AUTHZ, {"id": authz_id}).all()
        return _authz(r, tuple(_challenge(c) for c in chals))

    def challenge(self, challenge_id: str) -> Challenge | None:
        with self.store.read() as conn:
            r = conn.execute(_CHALLENGE_BY_ID, {"id": challenge_id}).first()
        return _challenge(r) if r else None

    def start_challenge(self, challenge: Challenge) -> bool:
        """pending -> processing, for one caller only; the authz must still be pending."""
        with self.store.state_write() as conn:
            authz = conn.execute(_AUTHZ_STATE, {"id": challenge.authz_id}).first()
            if authz is None or authz.status != "pending" or (
                    authz.expires_at <= self.clock.now()):
                return False
            return conn.execute(_CHALLENGE_START, {"key": challenge.id}).rowcount == 1

    def release_interrupted_challenges(self) -> int:
        """Put challenges left "processing" back to "pending" (their validation ran in a
        process that is gone), so the client can ask again instead of waiting out the
        authorization. A validation still running elsewhere records its result anyway."""
        with self.store.state_write() as conn:
            r = conn.execute(CHALLENGES.update().where(CHALLENGES.c.status == "processing")
                             .values(status="pending"))
            return int(r.rowcount)

    def finish_challenge(self, challenge: Challenge, error: dict[str, Any] | None,
                         valid_for: dt.timedelta) -> None:
        """Record a validation result on the challenge and its authorization; a valid
        authorization then lives ``valid_for`` (it is reused for new orders until then)."""
        now = self.clock.now()
        with self.store.state_write() as conn:
            conn.execute(_CHALLENGE_FINISH, {
                "key": challenge.id, "new_status": "valid" if error is None else "invalid",
                "at": now, "new_error": json.dumps(error) if error else None})
            if error is None:
                conn.execute(_AUTHZ_VALIDATED, {"key": challenge.authz_id,
                                                "expires": now + valid_for})
            else:
                conn.execute(_AUTHZ_FAILED, {"key": challenge.authz_id})

    def deactivate_authorization(self, authz_id: str) -> None:
        with self.store.state_write() as conn:
            conn.execute(AUTHZS.update().where(AUTHZS.c.id == authz_id,
                                               AUTHZS.c.status.in_(("pending", "valid")))
                         .values(status="deactivated"))

    # -- orders -------------------------------------------------------------------------

    def create_order(self, *, account_id: str, profile: str,
                     identifiers: list[tuple[Identifier, bool]],
                     challenge_types: dict[Identifier, list[str]],
                     not_before: dt.datetime | None, not_after: dt.datetime | None,
                     order_lifetime: dt.timedelta, authz_lifetime: dt.timedelta,
                     replaces: str | None = None) -> Order:
        """Create an order, reusing the account's valid authorizations for its names."""
        now = self.clock.now()
        order_id = new_id()
        authz_ids: list[str] = []
        with self.store.state_write() as conn:
            if replaces is not None and conn.execute(
                    sa.select(ORDERS.c.id).where(ORDERS.c.replaces == replaces,
                                                 ORDERS.c.status != "invalid")).first():
                raise AlreadyReplaced(replaces)
            for ident, wildcard in identifiers:
                reuse = conn.execute(_AUTHZ_REUSE, {
                    "account_id": account_id, "profile": profile, "type": ident.type,
                    "value": ident.value, "wildcard": wildcard,
                    "after": now + dt.timedelta(hours=1)}).first()
                if reuse is not None:
                    authz_ids.append(reuse.id)
                    continue
                authz_id = new_id()
                conn.execute(_AUTHZ_INSERT, {
                    "id": authz_id, "account_id": account_id, "profile": profile,
                    "identifier_type": ident.type, "identifier_value": ident.value,
                    "wildcard": wildcard, "status": "pending",
                    "expires_at": now + authz_lifetime, "created_at": now})
                conn.execute(_CHALLENGE_INSERT, [
                    {"id": new_id(), "authz_id": authz_id, "type": ctype,
                     "token": secrets.token_urlsafe(32), "status": "pending",
                     "validated_at": None, "error": None}
                    for ctype in challenge_types[ident]])
                authz_ids.append(authz_id)
            conn.execute(_ORDER_INSERT, {
                "id": order_id, "account_id": account_id, "profile": profile,
                "status": "pending",
                "identifiers": json.dumps([i.as_json() for i, _ in identifiers]),
                "authorizations": json.dumps(authz_ids), "not_before": not_before,
                "not_after": not_after, "expires_at": now + order_lifetime, "error": None,
                "serial": None, "request_id": None, "created_at": now, "replaces": replaces})
            order = self.order(order_id, conn)
        assert order is not None
        return order

    def order(self, order_id: str, conn: Connection | None = None) -> Order | None:
        if conn is not None:
            r = conn.execute(_ORDER_BY_ID, {"id": order_id}).first()
        else:
            with self.store.read() as c:
                r = c.execute(_ORDER_BY_ID, {"id": order_id}).first()
        return _order(r) if r else None

    def refresh_order(self, order: Order) -> Order:
        """Move a pending order on from its authorizations' states (RFC 8555 7.1.6)."""
        if order.status not in ("pending", "ready"):
            return order
        now = self.clock.now()
        if order.expires_at <= now:
            new_status = "invalid"
            error: dict[str, Any] | None = {"type": "urn:ietf:params:acme:error:malformed",
                                            "detail": "the order expired", "status": 400}
        else:
            with self.store.read() as conn:
                rows = conn.execute(_AUTHZ_STATES, {"ids": list(order.authz_ids)}).all()
            statuses = ["expired" if r.status in ("pending", "valid") and r.expires_at <= now
                        else r.status for r in rows]
            error = None
            if any(s in ("invalid", "deactivated", "expired", "revoked") for s in statuses):
                new_status = "invalid"
                error = {"type": "urn:ietf:params:acme:error:unauthorized",
                         "detail": "an authorization of this order is not valid",
                         "status": 403}
            elif statuses and all(s == "valid" for s in statuses):
                new_status = "ready"
            else:
                new_status = "pending"
        if new_status == order.status:
            return order
        with self.store.state_write() as conn:
            conn.execute(_ORDER_MOVE, {"key": order.id, "was": order.status,
                                       "new_status": new_status,
                                       "new_error": json.dumps(error) if error else None})
            fresh = self.order(order.id, conn)
        assert fresh is not None
        return fresh

    def begin_finalize(self, order_id: str) -> bool:
        """ready -> processing: true for exactly one of any number of concurrent calls."""
        with self.store.state_write() as conn:
            return conn.execute(_ORDER_BEGIN_FINALIZE, {"key": order_id}).rowcount == 1

    def end_finalize(self, order_id: str, *, serial: str | None = None,
                     request_id: str | None = None, error: dict[str, Any] | None = None
                     ) -> Order:
        values: dict[str, Any]
        if serial is not None:
            values = {"status": "valid", "serial": serial}
        elif error is not None:
            values = {"status": "invalid", "error": json.dumps(error)}
        else:
            values = {"status": "processing", "request_id": request_id}
        with self.store.state_write() as conn:
            if serial is not None:  # the common case, a statement built once
                conn.execute(_ORDER_ISSUED, {"key": order_id, "new_serial": serial})
            else:
                conn.execute(ORDERS.update().where(ORDERS.c.id == order_id).values(**values))
            order = self.order(order_id, conn)
        assert order is not None
        return order

    def orders_of(self, account_id: str, limit: int = 1000) -> list[Order]:
        with self.store.read() as conn:
            rows = conn.execute(sa.select(ORDERS).where(ORDERS.c.account_id == account_id)
                                .order_by(ORDERS.c.created_at).limit(limit)).all()
        return [_order(r) for r in rows]

    # -- rate limits --------------------------------------------------------------------

    def count_orders(self, *, since: dt.datetime, account_id: str | None = None,
                     profile: str | None = None) -> int:
        if (account_id is None) == (profile is None):
            raise ValueError("count the orders of one account or of one profile")
        q, params = ((_ORDERS_OF_ACCOUNT_SINCE, {"since": since, "account_id": account_id})
                     if account_id is not None
                     else (_ORDERS_OF_PROFILE_SINCE, {"since": since, "profile": profile}))
        with self.store.read() as conn:
            return int(conn.execute(q, params).scalar_one())

    def oldest_order_since(self, *, since: dt.datetime, account_id: str | None = None,
                           profile: str | None = None) -> dt.datetime | None:
        q = sa.select(sa.func.min(ORDERS.c.created_at)).where(ORDERS.c.created_at >= since)
        if account_id is not None:
            q = q.where(ORDERS.c.account_id == account_id)
        if profile is not None:
            q = q.where(ORDERS.c.profile == profile)
        with self.store.read() as conn:
            value = conn.execute(q).scalar_one_or_none()
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    def count_pending_authorizations(self, account_id: str) -> int:
        with self.store.read() as conn:
            return int(conn.execute(_PENDING_AUTHZS, {"account_id": account_id,
                                                      "now": self.clock.now()}).scalar_one())


class EabAlreadyUsed(Exception):
    pass


class AlreadyReplaced(Exception):
    pass
