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
