"""Renewal information (RFC 9773): the window in which to renew a certificate, named by
its certID, and the certID lookup that newOrder's "replaces" uses too."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from certwright.acme import config as acmeconfig
from certwright.acme import jws
from certwright.acme.documents import rfc3339
from certwright.acme.exchange import Ctx, Reply
from certwright.acme.ports import AcmeCore
from certwright.acme.problems import malformed, not_found
from certwright.model.certificates import CertificateRecord, format_serial

# How long a client waits before it asks again (RFC 9773 Retry-After): six hours.
RETRY_AFTER = "21600"


class RenewalInfo:
    def __init__(self, core: AcmeCore) -> None:
        self.core = core
        ski = core.chain[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self._issuer_key_id = ski.value.digest

    def certificate(self, certid: str) -> CertificateRecord | None:
        """The certificate an RFC 9773 certID names, if this CA issued it: the certID is
        base64url(the AKI keyIdentifier) "." base64url(the serial's DER INTEGER bytes)."""
        aki_part, dot, serial_part = certid.partition(".")
        if not dot:
            raise malformed("a certID is base64url(AKI keyIdentifier).base64url(serial)")
        aki = jws.b64decode(aki_part, "certID key identifier")
        serial_bytes = jws.b64decode(serial_part, "certID serial")
        if aki != self._issuer_key_id or not serial_bytes:
            return None
        return self.core.find_certificate(format_serial(int.from_bytes(serial_bytes, "big")))

    def renewal_info(self, ctx: Ctx) -> Reply:
        record = self.certificate(ctx.params["certid"])
        if record is None:
            raise not_found("no certificate from this CA with that certID")
        now = self.core.clock.now()
        if record.revoked:
            # A revoked certificate should be replaced at once.
            start, end = now - dt.timedelta(hours=1), now
        else:
            profiles = self.core.config.profiles
            acme = acmeconfig.profile_settings(
                profiles.get(record.profile, ctx.profile))
            life = record.not_after - record.not_before
            start = record.not_before + life * acme.renewal_window_start
            end = record.not_before + life * acme.renewal_window_end
            # Whole seconds on the wire, rounded outward so a short lifetime cannot
            # collapse the window. RFC 9773 4.2: "A RenewalInfo object in which the end
            # timestamp equals or precedes the start timestamp is invalid. Servers MUST
            # NOT serve such a response".
            start = start.replace(microsecond=0)
            if end.microsecond:
                end = end.replace(microsecond=0) + dt.timedelta(seconds=1)
        return Reply(200, {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}},
                     headers={"Retry-After": RETRY_AFTER})
