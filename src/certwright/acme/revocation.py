"""revokeCert (RFC 8555 7.6): by the account that ordered the certificate (a kid), or by
the certificate's own key (a jwk)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from certwright.acme import jws
from certwright.acme.accounts import holds, requester
from certwright.acme.auth import Authenticator
from certwright.acme.exchange import Ctx, Reply
from certwright.acme.messages import RevokeCert
from certwright.acme.ports import AcmeCore
from certwright.acme.problems import AcmeProblem, not_found
from certwright.errors import CertwrightError, ErrorKind
from certwright.model.certificates import format_serial

CERTIFICATE_KEY = "acme-certificate-key"  # the audit actor of a revocation by that key


def already_revoked() -> AcmeProblem:
    return AcmeProblem("alreadyRevoked", "the certificate is already revoked")


class Revocation:
    def __init__(self, core: AcmeCore, auth: Authenticator) -> None:
        self.core = core
        self.auth = auth

    def revoke(self, ctx: Ctx) -> Reply:
        signed = self.auth.signed(ctx, allow_jwk=True)
        msg = RevokeCert.from_json(signed.payload())
        record = self.core.find_certificate(format_serial(msg.certificate.serial_number))
        if record is None or record.der != msg.der:
            raise not_found("this CA did not issue that certificate")
        if signed.account is not None:
            if not holds(signed.account, record.requester):
                raise AcmeProblem("unauthorized", "this account did not order that "
                                  "certificate", 403)
            actor = str(requester(signed.account))
        else:
            spki = msg.certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            if jws.spki_der(signed.key) != spki:
                raise AcmeProblem("unauthorized", "the jwk is not the certificate's key", 403)
            actor = CERTIFICATE_KEY
        if record.revoked:
            raise already_revoked()
        try:
            self.core.revoke(record.serial, msg.reason, actor)
        except CertwrightError as e:
            if e.kind is ErrorKind.CONFLICT:  # revoked by a concurrent request
                raise already_revoked() from None
            raise
        return Reply(200)
