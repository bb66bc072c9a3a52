"""ACME storage on its own: what survives a server that died mid-validation."""

from __future__ import annotations

import datetime as dt

from certwright.acme.app import acme_storage
from certwright.ca.service import CertificateAuthority
from certwright.model.acme import Identifier


def test_ok_interrupted_validation_is_released(ca: CertificateAuthority) -> None:
    state = acme_storage(ca)
    account, created = state.create_account(profile="tls-server", thumbprint="t" * 43,
                                            jwk={"kty": "EC"}, contact=(), tos_agreed=True,
                                            eab_kid=None)
    assert created
    ident = Identifier("dns", "a.svc.internal")
    order = state.create_order(account_id=account.id, profile="tls-server",
                               identifiers=[(ident, False)],
                               challenge_types={ident: ["http-01"]}, not_before=None,
                               not_after=None, order_lifetime=dt.timedelta(days=1),
                               authz_lifetime=dt.timedelta(days=1))
    authz = state.authorization(order.authz_ids[0])
    assert authz is not None
    chal = authz.challenges[0]
    assert state.start_challenge(chal)
    assert not state.start_challenge(chal)  # one validation at a time
    # The process validating it dies; the next server start releases it.
    assert state.release_interrupted_challenges() == 1
    again = state.challenge(chal.id)
    assert again is not None and again.status == "pending"
    assert state.start_challenge(again)
