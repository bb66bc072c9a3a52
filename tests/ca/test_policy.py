"""The RA on its own: profiles decide, whatever protocol the request came from."""

from __future__ import annotations

import datetime as dt

import pytest

from certwright.ca import policy
from certwright.ca.datadir import default_config
from certwright.ca.policy import Issue, Pending, Reject
from certwright.ca.profiles import Config, parse_config_text
from certwright.errors import ErrorKind
from tests.helpers import csr, key, request

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def config() -> Config:
    text = default_config(hostnames=["localhost"], http="127.0.0.1:8080",
                          https="127.0.0.1:8443", http_url="http://127.0.0.1:8080",
                          https_url="https://localhost:8443")
    return parse_config_text(text, "test.yaml")


def decide(config: Config, *args: object, profile: str = "tls-server", **kwargs: object
           ) -> policy.Decision:
    return policy.decide(config, request(*args, profile=profile, **kwargs), NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048", "rsa3072"])
def test_ok_key_types_tls_server(config: Config, kind: str) -> None:
    d = decide(config, csr(["a.svc.internal"], private_key=key(kind)))
    assert isinstance(d, Issue), d


def test_ok_names_and_cn(config: Config) -> None:
    d = decide(config, csr(["A.Svc.Internal.", "10.0.0.7"], cn="a.svc.internal"))
    assert isinstance(d, Issue)
    assert d.names.dns == ("a.svc.internal",)
    assert [str(a) for a in d.names.ip] == ["10.0.0.7"]
    assert d.common_name == "a.svc.internal"


def test_ok_default_validity_and_backdate(config: Config) -> None:
    d = decide(config, csr(["a.svc.internal"]))
    assert isinstance(d, Issue)
    assert d.not_before == NOW - dt.timedelta(hours=1)
    assert d.not_after - d.not_before == dt.timedelta(days=90)


def test_ok_manual_profile_is_pending(config: Config) -> None:
    d = decide(config, csr(["cam1.devices.internal"]), profile="device")
    assert isinstance(d, Pending)
    assert "approval" in d.reason


def test_ok_manual_profile_approved_issues(config: Config) -> None:
    d = decide(config, csr(["cam1.devices.internal"]), profile="device", approved_by="alice")
    assert isinstance(d, Issue)


def test_ok_device_cn_only_becomes_san(config: Config) -> None:
    d = decide(config, csr([], cn="cam2.devices.internal"), profile="device", approved_by="a")
    assert isinstance(d, Issue)
    assert d.names.dns == ("cam2.devices.internal",)


@pytest.mark.parametrize(
    ("case", "kwargs", "kind", "rule"),
    [
        ("fail/rsa-1024", {"private_key": "rsa1024"}, ErrorKind.BAD_PUBLIC_KEY,
         "key.rsa_min_bits"),
        ("fail/secp256k1", {"private_key": "secp256k1"}, ErrorKind.BAD_PUBLIC_KEY,
         "key.ecdsa_curves"),
        ("fail/p521-not-in-profile", {"private_key": "p521"}, ErrorKind.BAD_PUBLIC_KEY,
         "keys.ecdsa_curves"),
        ("fail/ed25519-not-in-profile", {"private_key": "ed25519"}, ErrorKind.BAD_PUBLIC_KEY,
         "keys.ed25519"),
        ("fail/name-outside", {"names": ["www.example.com"]}, ErrorKind.REJECTED_IDENTIFIER,
         "names.dns"),
        ("fail/suffix-is-not-subdomain", {"names": ["evilinternal"]},
         ErrorKind.REJECTED_IDENTIFIER, "names.dns"),
        ("fail/wildcard-forbidden", {"names": ["*.svc.internal"]},
         ErrorKind.REJECTED_IDENTIFIER, "names.wildcards"),
        ("fail/ip-outside", {"names": ["8.8.8.8"]}, ErrorKind.REJECTED_IDENTIFIER, "names.ip"),
        ("fail/no-san", {"names": [], "cn": "a.svc.internal"}, ErrorKind.REJECTED_IDENTIFIER,
         "names"),
        ("fail/no-names-at-all", {"names": []}, ErrorKind.REJECTED_IDENTIFIER, "names"),
        ("fail/cn-not-a-san", {"names": ["a.svc.internal"], "cn": "b.svc.internal"},
         ErrorKind.REJECTED_IDENTIFIER, "names.keep_cn"),
        ("fail/uri-not-allowed", {"names": ["uri:spiffe://x/y"]},
         ErrorKind.REJECTED_IDENTIFIER, "names.uri"),
        ("fail/bad-dns-syntax", {"names": ["a..internal"]}, ErrorKind.REJECTED_IDENTIFIER,
         "names.dns"),
        ("fail/star-inside", {"names": ["a.*.internal"]}, ErrorKind.REJECTED_IDENTIFIER,
         "names.dns"),
    ],
)
def test_fail_rejections(config: Config, case: str, kwargs: dict[str, object],
                         kind: ErrorKind, rule: str) -> None:
    names = kwargs.pop("names", ["a.svc.internal"])
    if "private_key" in kwargs:
        kwargs["private_key"] = key(str(kwargs["private_key"]))
    d = decide(config, csr(names, **kwargs))  # type: ignore[arg-type]
    assert isinstance(d, Reject), case
    assert d.error.kind is kind, (case, d.error)
    assert d.error.rule == rule, (case, d.error)


def test_fail_validity_over_max(config: Config) -> None:
    d = decide(config, csr(["a.svc.internal"]), not_after=NOW + dt.timedelta(days=91))
    assert isinstance(d, Reject)
    assert d.error.rule == "validity.max"
    assert "exceeds" in d.error.detail


def test_ok_shorter_validity(config: Config) -> None:
    d = decide(config, csr(["a.svc.internal"]), not_after=NOW + dt.timedelta(days=7))
    assert isinstance(d, Issue)
    assert d.not_after == NOW + dt.timedelta(days=7)


def test_fail_unknown_profile(config: Config) -> None:
    d = decide(config, csr(["a.svc.internal"]), profile="nope")
    assert isinstance(d, Reject)
    assert d.error.kind is ErrorKind.NOT_FOUND
    assert "tls-server" in d.error.detail


def test_fail_protocol_not_allowed(config: Config) -> None:
    d = decide(config, csr(["a.svc.internal"]), profile="tls-client", protocol="acme")
    assert isinstance(d, Reject)
    assert d.error.rule == "protocols"


def test_ok_wildcard_when_allowed() -> None:
    cfg = parse_config_text(
        "profiles:\n  w:\n    names: {dns: ['*.svc.internal'], wildcards: true}\n"
        "default_profile: w\n", "w.yaml")
    assert isinstance(policy.decide(cfg, request(csr(["*.a.svc.internal"]), profile="w"), NOW),
                      Issue)
    # The wildcard's base must itself fall under an allowed pattern.
    d = policy.decide(cfg, request(csr(["*.svc.other"]), profile="w"), NOW)
    assert isinstance(d, Reject) and d.error.rule == "names.dns"


def test_ok_exact_and_any_patterns() -> None:
    cfg = parse_config_text(
        "profiles:\n  e:\n    names: {dns: ['host.example.com']}\n"
        "  any:\n    names: {dns: ['*']}\ndefault_profile: e\n", "p.yaml")
    assert isinstance(policy.decide(cfg, request(csr(["host.example.com"]), profile="e"), NOW),
                      Issue)
    assert isinstance(policy.decide(cfg, request(csr(["x.host.example.com"]), profile="e"),
                                    NOW), Reject)
    assert isinstance(policy.decide(cfg, request(csr(["anything.example"]), profile="any"),
                                    NOW), Issue)


def test_fail_wildcard_needs_a_wildcard_pattern() -> None:
    cfg = parse_config_text(
        "profiles:\n  w:\n    names: {dns: [x.corp.example, '*.svc.example'], wildcards: true}\n"
        "default_profile: w\n", "w.yaml")
    d = policy.decide(cfg, request(csr(["*.corp.example"]), profile="w"), NOW)
    assert isinstance(d, Reject) and d.error.rule == "names.dns"
    assert isinstance(policy.decide(cfg, request(csr(["x.corp.example"]), profile="w"), NOW),
                      Issue)
    for ok in ("*.svc.example", "*.a.svc.example"):
        assert isinstance(policy.decide(cfg, request(csr([ok]), profile="w"), NOW), Issue), ok


def test_fail_notbefore_backdated_beyond_profile(config: Config) -> None:
    d = decide(config, csr(["a.svc.internal"]), not_before=NOW - dt.timedelta(days=89),
               not_after=NOW + dt.timedelta(hours=1))
    assert isinstance(d, Reject) and d.error.rule == "validity.backdate"
    d = decide(config, csr(["a.svc.internal"]), not_before=NOW - dt.timedelta(minutes=30))
    assert isinstance(d, Issue) and d.not_before == NOW - dt.timedelta(minutes=30)
