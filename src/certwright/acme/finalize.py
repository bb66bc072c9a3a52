"""Finalize (RFC 8555 7.4): the CSR checked against the order, one enroll call into the
core; and the certificate's download (7.4.2)."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.acme import jws
from certwright.acme.accounts import holds, requester
from certwright.acme.auth import Authenticator
from certwright.acme.config import PROTOCOL
from certwright.acme.documents import order_doc, order_url
from certwright.acme.exchange import PEM_CHAIN, Ctx, Reply
from certwright.acme.messages import Finalize
from certwright.acme.orders import RETRY_AFTER_PROCESSING, advance, owned_order
from certwright.acme.ports import AcmeCore, AcmeStorage
from certwright.acme.problems import AcmeProblem, from_error, not_found, server_internal
from certwright.ca import policy
from certwright.ca.policy import EnrollmentRequest
from certwright.ca.service import Held, Issued
from certwright.errors import CertwrightError
from certwright.model.acme import Order
from certwright.pki import csr as csrlib
from certwright.pki.names import Names, common_name, normalize_dns


def check_csr(order: Order, csr: x509.CertificateSigningRequest, account_key: jws.AnyKey
              ) -> None:
    """RFC 8555 7.4: "The CSR MUST indicate the exact same set of requested identifiers
    as the initial newOrder request", and its key is not the account's. Once this passed,
    a commonName is one of the order's identifiers."""
    try:
        names = csrlib.requested_names(csr)
    except CertwrightError as e:
        raise AcmeProblem("badCSR", e.detail) from None
    requested = {("dns", n) for n in names.dns} | {("ip", str(a)) for a in names.ip}
    if names.uri or names.email:
        raise AcmeProblem("badCSR", "the CSR may name only the order's DNS names and IPs")
    wanted = {(i.type, i.value) for i in order.identifiers}
    cn = common_name(csr.subject)
    if cn is not None:
        requested.add(_cn_identifier(cn, names, wanted))
    if requested != wanted:
        missing = sorted(v for _, v in wanted - requested)
        extra = sorted(v for _, v in requested - wanted)
        raise AcmeProblem("badCSR", "the CSR's names differ from the order's identifiers"
                          + (f"; missing: {', '.join(missing)}" if missing else "")
                          + (f"; not in the order: {', '.join(extra)}" if extra else ""))
    csr_spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    if jws.spki_der(account_key) == csr_spki:
        raise AcmeProblem("badCSR", "the certificate key must not be the account key")


def _cn_identifier(cn: str, names: Names, wanted: set[tuple[str, str]]) -> tuple[str, str]:
    """The identifier the commonName stands for. RFC 8555 7.4: "Identifiers of type "dns"
    MUST appear either in the commonName portion of the requested subject name or in an
    extensionRequest attribute [RFC2985] requesting a subjectAltName extension, or both":
    that choice is given to "dns" identifiers only, so an IP address in the commonName
    must be in the subjectAltName as well."""
    try:
        ip = ipaddress.ip_address(cn.strip())
    except ValueError:
        pass
    else:
        if ip not in names.ip:
            raise AcmeProblem("badCSR", f"the CSR's commonName {cn!r} is an IP address "
                              "missing from its subjectAltName (only a DNS name may stand "
                              "in the commonName alone)")
        return ("ip", str(ip))
    try:
        dns = normalize_dns(cn)
    except CertwrightError:
        raise AcmeProblem("badCSR", f"the CSR's commonName {cn!r} is not a DNS name: it "
                          "must be one of the order's identifiers (RFC 8555 7.4)") from None
    if ("dns", dns) not in wanted:
        listed = sorted(v for _, v in wanted)
        more = f", and {len(listed) - 5} more" if len(listed) > 5 else ""
        raise AcmeProblem("badCSR", f"the CSR's commonName {cn!r} is not one of the order's "
                          f"identifiers ({', '.join(listed[:5])}{more})")
    return ("dns", dns)


class Finalization:
    def __init__(self, core: AcmeCore, storage: AcmeStorage, auth: Authenticator) -> None:
        self.core = core
        self.storage = storage
        self.auth = auth

    def finalize(self, ctx: Ctx) -> Reply:
        signed = self.auth.by_account(ctx)
        account = signed.account
        order = advance(self.core, self.storage, owned_order(self.storage, ctx, account))
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready", 403)
        if ctx.caa_problem is not None:
            # The order stays ready: the domain owner may change the records and the
            # client finalize again.
            raise ctx.caa_problem
        csr = Finalize.from_json(signed.payload()).csr
        check_csr(order, csr, signed.key)
        try:
            # The RA checks the key again at enroll; checked here too, an unacceptable
            # key is a badCSR the client can correct while the order stays ready.
            policy.check_key(ctx.profile, csr.public_key())
        except CertwrightError as e:
            raise AcmeProblem("badCSR", str(e)) from None
        if not self.storage.begin_finalize(order.id):
            raise AcmeProblem("orderNotReady", "the order is already being finalized", 403)
        # check_csr refused a commonName that is not an order identifier: any CN left
        # is a name the account proved, and the certificate's SAN must carry it.
        request = EnrollmentRequest(profile=order.profile, csr=csr,
                                    requester=requester(account), protocol=PROTOCOL,
                                    not_before=order.not_before, not_after=order.not_after,
                                    cn_is_name=common_name(csr.subject) is not None)
        try:
            outcome = self.core.enroll(request)
        except CertwrightError as e:
            problem = from_error(e, csr_stage=True)
            self.storage.end_finalize(order.id, error=problem.as_json())
            raise problem from None
        except Exception:
            self.storage.end_finalize(order.id, error=server_internal("issuance failed")
                                      .as_json())
            raise
        if isinstance(outcome, Issued):
            order = self.storage.end_finalize(order.id, serial=outcome.record.serial)
        else:
            assert isinstance(outcome, Held)
            order = self.storage.end_finalize(order.id, request_id=outcome.request_id)
        headers = {"Location": order_url(ctx.base, order.id)}
        if order.status == "processing":
            headers["Retry-After"] = RETRY_AFTER_PROCESSING
        return Reply(200, order_doc(ctx.base, order), headers=headers)

    def certificate(self, ctx: Ctx) -> Reply:
        account = self.auth.post_as_get(ctx)
        record = self.core.find_certificate(ctx.params["serial"])
        if record is None or not holds(account, record.requester):
            raise not_found("no such certificate")
        cert = x509.load_der_x509_certificate(record.der)
        pem = cert.public_bytes(serialization.Encoding.PEM) + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.core.chain)
        up = f"{self.core.config.server.http_url}/ca/{self.core.issuer_id}.der"
        return Reply(200, pem, PEM_CHAIN, headers={"Link": f'<{up}>;rel="up"'})
