"""Which addresses validation may connect to (the SSRF allow-list), in isolation."""

from __future__ import annotations

import ipaddress

import pytest

from certwright.acme.validation import address_allowed


def nets(*names: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n) for n in names]


@pytest.mark.parametrize(("case", "addr", "networks", "allowed"), [
    ("ok/private-in-private", "10.1.2.3", ("10.0.0.0/8",), True),
    ("fail/outside", "192.0.2.1", ("10.0.0.0/8",), False),
    ("fail/loopback-through-everything", "127.0.0.1", ("0.0.0.0/0",), False),
    ("ok/loopback-named", "127.0.0.1", ("127.0.0.0/8",), True),
    ("fail/metadata-through-everything", "169.254.169.254", ("0.0.0.0/0",), False),
    ("fail/unspecified", "0.0.0.0", ("0.0.0.0/0",), False),
    ("fail/multicast", "224.0.0.1", ("0.0.0.0/0",), False),
    ("fail/v6-loopback", "::1", ("::/0",), False),
    ("fail/v6-link-local", "fe80::1", ("::/0",), False),
    ("fail/mapped-loopback", "::ffff:127.0.0.1", ("::/0",), False),
    ("ok/mapped-loopback-when-both-forms-named", "::ffff:127.0.0.1",
     ("::/0", "127.0.0.0/8"), True),
    ("fail/6to4-loopback", "2002:7f00:1::", ("2000::/3",), False),
    ("fail/nat64-metadata", "64:ff9b::a9fe:a9fe", ("::/0",), False),
    ("ok/public-v6", "2001:db8::1", ("2001:db8::/32",), True),
])
def test_address_allowed(case: str, addr: str, networks: tuple[str, ...], allowed: bool
                         ) -> None:
    assert address_allowed(ipaddress.ip_address(addr), nets(*networks)) is allowed, case


def test_caa_critical_unknown_property_forbids_issuance() -> None:
    """RFC 8659 4.1, on recorded CAA answers (challtestsrv cannot set the flag)."""
    import asyncio

    from certwright.acme.problems import AcmeProblem
    from certwright.acme.validation import Settings, Validator

    answers = {
        "crit.example": ['128 futuretag "x"', '0 issue "ca.example"'],
        "noncrit.example": ['0 futuretag "x"', '0 issue "ca.example"'],
        "critknown.example": ['128 issue "ca.example"'],
    }
    v = Validator(Settings(resolver="127.0.0.1:53", http01_port=80, tlsalpn01_port=443,
                           timeout=1, max_redirects=10))

    async def recorded(name: str, rdtype: str) -> list[str] | None:
        assert rdtype == "CAA"
        return answers.get(name)

    v._query = recorded  # type: ignore[method-assign]
    with pytest.raises(AcmeProblem) as e:
        asyncio.run(v.check_caa("www.crit.example", False, ["ca.example"]))
    assert e.value.type == "caa" and "futuretag" in e.value.detail
    asyncio.run(v.check_caa("www.noncrit.example", False, ["ca.example"]))
    asyncio.run(v.check_caa("www.critknown.example", False, ["ca.example"]))
