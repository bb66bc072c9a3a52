"""Finalize's CSR check (RFC 8555 7.4) and the RA's ``cn_is_name``, on their own: the
commonName may carry a "dns" identifier without a subjectAltName, the set of names
(commonName and subjectAltName) is exactly the order's, and the certificate's SAN holds
them all. ``test_acme_negative_acmelib.py`` drives the same through certbot's library."""

from __future__ import annotations

import datetime as dt

import pytest
from joserfc.jwk import ECKey

from certwright.acme.finalize import check_csr
from certwright.acme.problems import AcmeProblem
from certwright.ca import policy
from certwright.ca.datadir import default_config
from certwright.ca.policy import Issue, Reject
from certwright.ca.profiles import Config, parse_config_text
from certwright.model.acme import Identifier, Order
from tests.helpers import csr, request

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ACCOUNT_KEY = ECKey.generate_key("P-256")


def order(*names: str) -> Order:
    return Order(id="o1", account_id="a1", profile="tls-server", status="ready",
                 identifiers=tuple(Identifier("ip" if n[0].isdigit() else "dns", n)
                                   for n in names),
                 authz_ids=(), not_before=None, not_after=None, expires_at=NOW, error=None,
                 serial=None, request_id=None, created_at=NOW)


# name -> (order identifiers, CSR SANs, CSR CN, what the badCSR detail says or None)
CSR_CASES: dict[str, tuple[tuple[str, ...], list[str], str | None, str | None]] = {
    "ok/cn-only": (("web.svc.internal",), [], "web.svc.internal", None),
    "ok/cn-only-as-typed": (("web.svc.internal",), [], "Web.Svc.Internal.", None),
    "ok/cn-one-identifier-san-the-other": (("a.svc.internal", "b.svc.internal"),
                                           ["b.svc.internal"], "a.svc.internal", None),
    "ok/cn-also-in-san": (("a.svc.internal",), ["a.svc.internal"], "a.svc.internal", None),
    "ok/ip-cn-also-in-san": (("10.0.0.7",), ["10.0.0.7"], "10.0.0.7", None),
    "fail/cn-not-an-identifier": (("a.svc.internal",), ["a.svc.internal"],
                                  "other.svc.internal",
                                  "commonName 'other.svc.internal' is not one of the "
                                  "order's identifiers (a.svc.internal)"),
    "fail/cn-only-not-a-dns-name": (("a.svc.internal",), [], "Web Server",
                                    "commonName 'Web Server' is not a DNS name"),
    "fail/ip-cn-only": (("10.0.0.7",), [], "10.0.0.7",
                        "commonName '10.0.0.7' is an IP address missing from its "
                        "subjectAltName"),
    "fail/cn-and-san-differ-from-order": (("a.svc.internal", "b.svc.internal"),
                                          ["c.svc.internal"], "a.svc.internal",
                                          "missing: b.svc.internal; not in the order: "
                                          "c.svc.internal"),
}


@pytest.mark.parametrize("case", list(CSR_CASES))
def test_check_csr(case: str) -> None:
    identifiers, sans, cn, refused = CSR_CASES[case]
    request_csr = csr(sans, cn=cn)
    if refused is None:
        check_csr(order(*identifiers), request_csr, ACCOUNT_KEY)
        return
    with pytest.raises(AcmeProblem) as caught:
        check_csr(order(*identifiers), request_csr, ACCOUNT_KEY)
    assert caught.value.type == "badCSR", caught.value
    assert refused in caught.value.detail, caught.value.detail


@pytest.fixture(scope="module")
def config() -> Config:
    text = default_config(hostnames=["localhost"], http="127.0.0.1:8080",
                          https="127.0.0.1:8443", http_url="http://127.0.0.1:8080",
                          https_url="https://localhost:8443")
    return parse_config_text(text, "test.yaml")


def test_ra_cn_is_name_puts_the_cn_in_the_san(config: Config) -> None:
    only = policy.decide(config, request(csr([], cn="Web.Svc.Internal"), protocol="acme",
                                         cn_is_name=True), NOW)
    assert isinstance(only, Issue), only
    assert (only.names.dns, only.common_name) == (("web.svc.internal",), "web.svc.internal")
    both = policy.decide(config, request(csr(["b.svc.internal"], cn="a.svc.internal"),
                                         protocol="acme", cn_is_name=True), NOW)
    assert isinstance(both, Issue), both
    assert both.names.dns == ("a.svc.internal", "b.svc.internal")


def test_ra_without_cn_is_name_a_cn_only_request_is_refused(config: Config) -> None:
    # tls-server has no names.cn_as_san: what the front-end did not vouch for stays out.
    d = policy.decide(config, request(csr([], cn="web.svc.internal"), protocol="acme"), NOW)
    assert isinstance(d, Reject), d
    assert d.error.rule == "names", d.error
