"""ACME's storage: nonce redemptions, accounts, EAB keys, orders, authorizations and
challenges. Rows become ``certwright.model.acme`` records here and nowhere else; the
front-end reaches this through its own ``AcmeStorage`` protocol (``acme/ports.py``).

Races between replicas are settled by the database: a nonce is redeemed by an INSERT
that only one transaction can make; an order moves ready -> processing by a conditional
UPDATE that only one finalize call can win; a key belongs to one account per profile by
a unique constraint. A refusal is a CertwrightError (``AcmeConflict``), never a
database exception.

Every method runs inside the caller's unit of work when there is one (``Store.unit()``):
a POST costs one transaction, whatever it reads and writes here.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from certwright.clock import Clock
from certwright.model.acme import (
    Account,
    AccountKeyInUse,
    AcmeConflict,
    Authorization,
    CertificateAlreadyReplaced,
    Challenge,
    EabKey,
    EabKeyAlreadyBound,
    Identifier,
    Order,
)
from certwright.store import repositories, schema
from certwright.store.repo import Store

ACCOUNTS = schema.acme_accounts
ORDERS = schema.acme_orders
AUTHZS = schema.acme_authorizations
CHALLENGES = schema.acme_challenges
NONCES = schema.acme_nonces
EAB = schema.acme_eab_keys

NONCE_KEY_SETTING = "acme.nonce_key"
SWEEP_EVERY = 64  # redemptions between two sweeps of expired nonce rows

# Statements of the per-request paths, built once (SQLAlchemy then skips building them and
# their cache keys on every call).
_NONCE_SWEEP = NONCES.delete().where(
    NONCES.c.expires_at < sa.bindparam("now", type_=NONCES.c.expires_at.type))
_ACCOUNT_BY_ID = sa.select(ACCOUNTS).where(ACCOUNTS.c.id == sa.bindparam("id"))
_ACCOUNT_BY_KEY = sa.select(ACCOUNTS).where(ACCOUNTS.c.profile == sa.bindparam("profile"),
                                            ACCOUNTS.c.thumbprint == sa.bindparam("thumbprint"))
_ACCOUNT_INSERT = ACCOUNTS.insert()
_EAB_BIND = (EAB.update().where(EAB.c.kid == sa.bindparam("key"), EAB.c.account_id.is_(None))
             .values(account_id=sa.bindparam("account")))
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
_ORDER_REPLACING = sa.select(ORDERS.c.id).where(ORDERS.c.replaces == sa.bindparam("certid"),
                                                ORDERS.c.status != "invalid")
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


def new_id() -> str:
    return secrets.token_urlsafe(12)


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


class AcmeRepository:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._nonce_key = self._load_nonce_key()
        insert = (postgresql.insert(NONCES) if store.engine.dialect.name == "postgresql"
                  else sqlite.insert(NONCES))
        # RETURNING tells whether the row went in (psycopg reports no rowcount for it).
        self._nonce_redeem = insert.on_conflict_do_nothing(
            index_elements=[NONCES.c.value]).returning(NONCES.c.value)
        self._redeemed = 0

    def _load_nonce_key(self) -> bytes:
        """The replicas' shared nonce MAC key: made by the first server that needs it."""
        with self.store.state_write() as conn:
            value = self.store.setting(NONCE_KEY_SETTING, conn)
            if value is None:
                value = secrets.token_hex(32)
                self.store.put_setting(conn, NONCE_KEY_SETTING, value)
        return bytes.fromhex(value)

    # -- nonces (RFC 8555 6.5) ----------------------------------------------------------

    def nonce_key(self) -> bytes:
        return self._nonce_key

    def redeem_nonce(self, value: str, expires_at: dt.datetime) -> bool:
        """Record the redemption of a nonce whose MAC and expiry the caller checked: true
        for the first redemption of ``value`` on any replica, false for every later one."""
        with self.store.state_write() as conn:
            redeemed = conn.execute(self._nonce_redeem,
                                    {"value": value, "expires_at": expires_at}
                                    ).first() is not None
            self._redeemed += 1
            if self._redeemed % SWEEP_EVERY == 0:
                # Now and then, forget nonces that have expired: their MAC check refuses
                # them from now on, so their rows are no longer needed.
                conn.execute(_NONCE_SWEEP, {"now": self.clock.now()})
        return redeemed

    # -- accounts -----------------------------------------------------------------------

    def account(self, account_id: str) -> Account | None:
        with self.store.read() as conn:
            r = conn.execute(_ACCOUNT_BY_ID, {"id": account_id}).first()
        return _account(r) if r else None

    def account_by_key(self, profile: str, thumbprint: str) -> Account | None:
        with self.store.read() as conn:
            r = conn.execute(_ACCOUNT_BY_KEY, {"profile": profile,
                                               "thumbprint": thumbprint}).first()
        return _account(r) if r else None

    def create_account(self, *, profile: str, thumbprint: str, jwk: dict[str, Any],
                       contact: tuple[str, ...], tos_agreed: bool, eab_kid: str | None
                       ) -> tuple[Account, bool]:
        """Create the account for this key, or return the one a concurrent request just
        created for it (created=False). With EAB the key is bound in the same
        transaction: one EAB key, one account (EabKeyAlreadyBound otherwise)."""
        now = self.clock.now()
        account_id = new_id()
        try:
            with self.store.state_write(savepoint=True) as conn:
                if eab_kid is not None and conn.execute(
                        _EAB_BIND, {"key": eab_kid, "account": account_id}).rowcount != 1:
                    raise EabKeyAlreadyBound(eab_kid)
                conn.execute(_ACCOUNT_INSERT, {
                    "id": account_id, "profile": profile, "thumbprint": thumbprint,
                    "jwk": json.dumps(jwk, sort_keys=True), "status": "valid",
                    "contact": json.dumps(list(contact)), "tos_agreed": tos_agreed,
                    "eab_kid": eab_kid, "created_at": now})
        except sa.exc.IntegrityError:
            existing = self.account_by_key(profile, thumbprint)
            if existing is None:
                raise AcmeConflict("the account could not be created; try again") from None
            return existing, False
        account = self.account(account_id)
        assert account is not None
        return account, True

    def update_contact(self, account_id: str, contact: tuple[str, ...]) -> Account:
        return self._update_account(account_id, contact=json.dumps(list(contact)))

    def change_key(self, account_id: str, jwk: dict[str, Any], thumbprint: str) -> Account:
        """Give the account a new key (RFC 8555 7.3.5); AccountKeyInUse when another
        account of the profile holds it (its unique key settles a race)."""
        try:
            return self._update_account(account_id, jwk=json.dumps(jwk, sort_keys=True),
                                        thumbprint=thumbprint)
        except sa.exc.IntegrityError:
            raise AccountKeyInUse() from None

    def _update_account(self, account_id: str, **values: Any) -> Account:
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

    def eab(self, kid: str) -> EabKey | None:
        with self.store.read() as conn:
            r = conn.execute(sa.select(EAB).where(EAB.c.kid == kid)).first()
        return EabKey(r.kid, r.profile, r.hmac_key, r.expires_at, r.account_id) if r else None

    # -- authorizations and challenges ---------------------------------------------------

    def authorization(self, authz_id: str) -> Authorization | None:
        with self.store.read() as conn:
            r = conn.execute(_AUTHZ_BY_ID, {"id": authz_id}).first()
            if r is None:
                return None
            chals = conn.execute(_CHALLENGES_OF_AUTHZ, {"id": authz_id}).all()
        return _authz(r, tuple(_challenge(c) for c in chals))

    def authorization_states(self, authz_ids: tuple[str, ...]
                             ) -> list[tuple[str, dt.datetime]]:
        """(status, expires_at) of each of these authorizations, in one query."""
        with self.store.read() as conn:
            rows = conn.execute(_AUTHZ_STATES, {"ids": list(authz_ids)}).all()
        return [(r.status, r.expires_at) for r in rows]

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
        """Create an order, reusing the account's valid authorizations for its names.
        CertificateAlreadyReplaced when a live order already replaces ``replaces``."""
        now = self.clock.now()
        order_id = new_id()
        authz_ids: list[str] = []
        with self.store.state_write() as conn:
            if replaces is not None and conn.execute(
                    _ORDER_REPLACING, {"certid": replaces}).first() is not None:
                raise CertificateAlreadyReplaced(replaces)
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
            order = self._order(conn, order_id)
        assert order is not None
        return order

    @staticmethod
    def _order(conn: Connection, order_id: str) -> Order | None:
        r = conn.execute(_ORDER_BY_ID, {"id": order_id}).first()
        return _order(r) if r else None

    def order(self, order_id: str) -> Order | None:
        with self.store.read() as conn:
            return self._order(conn, order_id)

    def move_order(self, order: Order, status: str, error: dict[str, Any] | None) -> Order:
        """Move an order from the status it was read in to ``status``; a concurrent move
        wins (the order is returned as it is then)."""
        with self.store.state_write() as conn:
            conn.execute(_ORDER_MOVE, {"key": order.id, "was": order.status,
                                       "new_status": status,
                                       "new_error": json.dumps(error) if error else None})
            fresh = self._order(conn, order.id)
        assert fresh is not None
        return fresh

    def begin_finalize(self, order_id: str) -> bool:
        """ready -> processing: true for exactly one of any number of concurrent calls."""
        with self.store.state_write() as conn:
            return conn.execute(_ORDER_BEGIN_FINALIZE, {"key": order_id}).rowcount == 1

    def end_finalize(self, order_id: str, *, serial: str | None = None,
                     request_id: str | None = None, error: dict[str, Any] | None = None
                     ) -> Order:
        """processing -> valid (``serial``), invalid (``error``), or still processing,
        waiting for an operator's decision on held request ``request_id``."""
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
            order = self._order(conn, order_id)
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


repositories.register("acme", AcmeRepository)
