"""``certwright acme ...``: the operator's commands of the ACME front-end."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import cast

import click

from certwright.acme.ports import AcmeStorage
from certwright.ca import datadir
from certwright.clioptions import DATA, OPERATOR, expires_at
from certwright.errors import CertwrightError, ErrorKind


@click.group()
def acme() -> None:
    """The ACME front-end."""


@acme.group("eab")
def acme_eab() -> None:
    """External Account Binding keys (RFC 8555 section 7.3.4)."""


@acme_eab.command("create")
@DATA
@click.option("--profile", required=True, help="The profile (ACME directory) the key is for.")
@click.option("--expires", default=None, help="Lifetime of the unused key, e.g. 7d.")
@OPERATOR
def acme_eab_create(data: Path, profile: str, expires: str | None, operator: str) -> None:
    """Print a key id and an HMAC key that bind one new ACME account to PROFILE.

    certbot: --eab-kid KID --eab-hmac-key KEY; lego: --eab --kid KID --hmac KEY.
    """
    with datadir.opened(data) as ca:
        p = ca.config.profile(profile)
        if "acme" not in p.protocols:
            raise CertwrightError(ErrorKind.MALFORMED,
                                  f"profile {profile!r} does not accept ACME requests")
        hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        until = expires_at(ca.clock.now(), expires)
        with ca.unit():
            kid = cast(AcmeStorage, ca.repository("acme")).create_eab(profile, hmac_key, until)
            ca.audit("acme.eab.created", actor=operator, subject=kid,
                     data={"profile": profile,
                           "expires_at": until.isoformat() if until else None})
    click.echo(f"kid: {kid}")
    click.echo(f"hmac_key: {hmac_key}")
