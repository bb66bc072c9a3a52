"""The configuration file: every mistake is named with file, key and what is wrong."""

from __future__ import annotations

import pytest

from certwright.ca.profiles import parse_config_text, parse_duration
from certwright.errors import CertwrightError, ErrorKind

BASE = "profiles:\n  p:\n    names: {dns: ['*.internal']}\ndefault_profile: p\n"


def error_of(text: str) -> str:
    with pytest.raises(CertwrightError) as e:
        parse_config_text(text, "/etc/cw.yaml")
    assert e.value.kind is ErrorKind.CONFIG
    return str(e.value)


def test_ok_minimal() -> None:
    cfg = parse_config_text(BASE, "x")
    assert cfg.profile("p").names.dns == ("*.internal",)
    assert cfg.keys.provider == "software"


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        ("fail/typo-top", BASE + "servr: {}\n", "/etc/cw.yaml: servr: unknown key (did you mean 'server'?)"),
        ("fail/typo-nested", "profiles:\n  p:\n    names: {wildcard: true}\ndefault_profile: p\n",
         "profiles.p.names.wildcard: unknown key (did you mean 'wildcards'?)"),
        ("fail/wrong-type", "profiles:\n  p:\n    names: {wildcards: maybe}\ndefault_profile: p\n",
         "profiles.p.names.wildcards: Input should be a valid boolean"),
        ("fail/rsa-floor", "profiles:\n  p:\n    keys: {rsa_min_bits: 1024}\ndefault_profile: p\n",
         "profiles.p.keys.rsa_min_bits: must be at least 2048"),
        ("fail/bad-curve", "profiles:\n  p:\n    keys: {ecdsa_curves: [P-192]}\ndefault_profile: p\n",
         "profiles.p.keys.ecdsa_curves.0"),
        ("fail/bad-duration", "profiles:\n  p:\n    validity: {max: forever}\ndefault_profile: p\n",
         "profiles.p.validity.max: 'forever' is not a duration"),
        ("fail/default-over-max", "profiles:\n  p:\n    validity: {max: 10d, default: 20d}\n"
         "default_profile: p\n", "default (20d) is longer than max (10d)"),
        ("fail/bad-network", "profiles:\n  p:\n    names: {ip: [10.0.0.1/8]}\ndefault_profile: p\n",
         "profiles.p.names.ip: not an IP network: 10.0.0.1/8 has host bits set"),
        ("fail/bad-approval", "profiles:\n  p:\n    approval: sometimes\ndefault_profile: p\n",
         "profiles.p.approval"),
        ("fail/unknown-protocol", "profiles:\n  p:\n    protocols: [gopher]\ndefault_profile: p\n",
         "profiles.p.protocols.0"),
        ("fail/no-profiles", "profiles: {}\n", "profiles: at least one profile is required"),
        ("fail/default-missing", BASE.replace("default_profile: p", "default_profile: q"),
         "default_profile 'q' is not one of the profiles"),
        ("fail/not-yaml", "profiles: [\n", "is not valid YAML"),
        ("fail/not-mapping", "- a\n", "expected a mapping"),
        ("fail/duplicate-key", BASE + "default_profile: p\n",
         "/etc/cw.yaml: line 5 is not valid YAML: duplicate key 'default_profile'"),
        ("fail/bad-eku", "profiles:\n  p:\n    extended_key_usage: [server]\ndefault_profile: p\n",
         "profiles.p.extended_key_usage.0"),
        ("fail/bad-oid", "profiles:\n  p:\n    policies: [dv]\ndefault_profile: p\n",
         "'dv' is not an object identifier"),
        ("fail/bad-url", BASE + "server: {http_url: 'ftp://x'}\n", "server.http_url"),
        ("fail/crl-refresh", BASE + "issuance: {crl_validity: 2d, crl_refresh_before: 3d}\n",
         "issuance: crl_refresh_before (3d) must be shorter than crl_validity (2d)"),
        ("fail/acme-resolver", BASE + "acme: {dns_resolver: dns.example}\n",
         "acme.dns_resolver: 'dns.example': give the resolver as IP:PORT"),
        ("fail/key-provider-unknown", BASE + "keys: {provider: pkcs11}\n",
         "keys.provider: Input should be 'software'"),
        ("fail/key-provider-typo", BASE + "keys: {provder: software}\n",
         "keys.provder: unknown key (did you mean 'provider'?)"),
        ("fail/acme-challenge", "profiles:\n  p:\n    acme: {challenges: [dns-02]}\n"
         "default_profile: p\n", "profiles.p.acme.challenges.0"),
    ],
)
def test_fail_config(case: str, text: str, expected: str) -> None:
    message = error_of(text)
    assert expected in message, (case, message)
    assert message.startswith("/etc/cw.yaml"), message


@pytest.mark.parametrize(("text", "seconds"), [("90d", 7776000), ("12h", 43200), ("30m", 1800),
                                               ("2w", 1209600), (3600, 3600)])
def test_ok_durations(text: object, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_ok_environment_overrides() -> None:
    from certwright.ca.profiles import parse_config, yaml

    text = ("profiles:\n  tls-server:\n    names: {dns: ['*.internal']}\n"
            "default_profile: tls-server\n")
    env = {"CERTWRIGHT_ACME__DNS_RESOLVER": "127.0.0.1:8053",
           "CERTWRIGHT_ACME__HTTP01_PORT": "5002",
           "CERTWRIGHT_ACME__TLSALPN01_PORT": "5001",
           "CERTWRIGHT_PROFILES__TLS_SERVER__APPROVAL": "manual",
           "CERTWRIGHT_PROFILES__TLS_SERVER__NAMES__DNS": "['*.test', localhost]",
           "CERTWRIGHT_DATA": "/ignored/without/a/double/underscore"}
    cfg = parse_config(yaml.safe_load(text), "x.yaml", env)
    assert cfg.acme.dns_resolver == "127.0.0.1:8053"
    assert (cfg.acme.http01_port, cfg.acme.tlsalpn01_port) == (5002, 5001)
    profile = cfg.profile("tls-server")
    assert profile.approval.value == "manual"
    assert profile.names.dns == ("*.test", "localhost")


def test_fail_environment_override_is_named() -> None:
    from certwright.ca.profiles import parse_config, yaml

    with pytest.raises(CertwrightError) as e:
        parse_config(yaml.safe_load(BASE), "x.yaml", {"CERTWRIGHT_ACME__HTTP01_PORT": "http"})
    assert "acme.http01_port" in str(e.value)
    assert "(set by CERTWRIGHT_ACME__HTTP01_PORT)" in str(e.value)
    with pytest.raises(CertwrightError) as e:
        parse_config(yaml.safe_load(BASE), "x.yaml", {"CERTWRIGHT_ACME__HTTP_PORT": "80"})
    assert "acme.http_port: unknown key (did you mean 'http01_port'?)" in str(e.value)


@pytest.mark.parametrize("case,profile,server_keygen,may_change", [
    ("ok/neutral-rules-off-by-default", "{}", False, False),
    ("ok/neutral-rules-set", "{server_keygen: true, renewal_may_change_names: true}",
     True, True),
    # Configurations written before the rules were protocol-neutral keep their meaning.
    ("ok/est-serverkeygen-turns-on-server-keygen", "{est: {serverkeygen: true}}", True, False),
    ("ok/est-reenroll-changes-turn-on-name-changes",
     "{est: {reenroll_allow_changes: true}}", False, True),
    ("ok/explicit-rule-wins-over-the-older-spelling",
     "{server_keygen: false, est: {serverkeygen: true}}", False, False),
])
def test_ok_protocol_neutral_rules(case: str, profile: str, server_keygen: bool,
                                   may_change: bool) -> None:
    config = parse_config_text(f"profiles:\n  p: {profile}\ndefault_profile: p\n", "x.yaml")
    p = config.profiles["p"]
    assert (p.server_keygen, p.renewal_may_change_names) == (server_keygen, may_change), case


@pytest.mark.parametrize("case,text,expected", [
    ("fail/internal-is-the-servers-own",
     "profiles:\n  p: {protocols: [internal]}\ndefault_profile: p\n",
     "protocol 'internal' is the server's own"),
    ("fail/front-end-section-typo",
     "profiles:\n  p: {acme: {check_caaa: true}}\ndefault_profile: p\n",
     "profiles.p.acme.check_caaa: unknown key (did you mean 'check_caa'?)"),
    ("fail/front-end-top-level-typo", "acme: {http01_prt: 80}\nprofiles:\n  p: {}\n"
     "default_profile: p\n", "acme.http01_prt: unknown key (did you mean 'http01_port'?)"),
])
def test_fail_composed_config(case: str, text: str, expected: str) -> None:
    assert expected in error_of(text), case
