"""Subject alternative names: parsing, syntax checks and normalization.

Names are compared in one canonical form: DNS names lower-case A-labels without a
trailing dot, IP addresses as ``ipaddress`` objects, URIs as given, e-mail addresses
with a lower-case domain.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from certwright.errors import CertwrightError, ErrorKind

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Names:
    """The identities a certificate asserts, in canonical form and stable order."""

    dns: tuple[str, ...] = ()
    ip: tuple[IPAddress, ...] = ()
    uri: tuple[str, ...] = ()
    email: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dns or self.ip or self.uri or self.email)

    def as_strings(self) -> list[str]:
        """``dns:a.example``, ``ip:10.0.0.1``...: for audit records and listings."""
        return (
            [f"dns:{n}" for n in self.dns]
            + [f"ip:{a}" for a in self.ip]
            + [f"uri:{u}" for u in self.uri]
            + [f"email:{e}" for e in self.email]
        )

    def general_names(self) -> list[x509.GeneralName]:
        out: list[x509.GeneralName] = [x509.DNSName(n) for n in self.dns]
        out += [x509.IPAddress(a) for a in self.ip]
        out += [x509.UniformResourceIdentifier(u) for u in self.uri]
        out += [x509.RFC822Name(e) for e in self.email]
        return out

    def contains_value(self, value: str) -> bool:
        """True when ``value`` (a CN, say) is one of these names."""
        v = value.strip().lower().rstrip(".")
        if v in self.dns or value in self.email:
            return True
        try:
            return ipaddress.ip_address(value) in self.ip
        except ValueError:
            return False


def _rejected(detail: str, rule: str) -> CertwrightError:
    return CertwrightError(ErrorKind.REJECTED_IDENTIFIER, detail, rule=rule)


def normalize_dns(name: str) -> str:
    """Check DNS name syntax (RFC 1034 preferred syntax, RFC 5280 4.2.1.6) and canonicalize.

    A leading ``*.`` label is kept (wildcard policy is the profile's business); any other
    ``*`` is refused. Internationalized names must arrive as A-labels (``xn--``), as
    RFC 5280 7.2 requires in certificates.
    """
    n = name.strip().rstrip(".").lower()
    if not n:
        raise _rejected("empty DNS name", "names.dns")
    if len(n) > 253:
        raise _rejected(f"DNS name {name!r} is longer than 253 characters", "names.dns")
    labels = n.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and len(labels) > 2:
            continue
        if not _LABEL.match(label):
            raise _rejected(f"{name!r} is not a valid DNS name", "names.dns")
    if labels[-1].isdigit():
        raise _rejected(f"{name!r} is not a valid DNS name: IP addresses go in ip", "names.dns")
    return n


def normalize_email(value: str) -> str:
    local, sep, domain = value.strip().rpartition("@")
    if not sep or not local or not domain:
        raise _rejected(f"{value!r} is not an e-mail address", "names.email")
    return f"{local}@{normalize_dns(domain)}"


def normalize_uri(value: str) -> str:
    # RFC 5280 4.2.1.6: "The name MUST NOT be a relative URI, and it MUST follow the URI
    # syntax and encoding rules specified in [RFC3986]. The name MUST include both a
    # scheme ... and a scheme-specific-part."
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$", value):
        raise _rejected(f"{value!r} is not an absolute URI", "names.uri")
    return value


def from_general_names(general_names: x509.SubjectAlternativeName) -> Names:
    dns: list[str] = []
    ips: list[IPAddress] = []
    uris: list[str] = []
    emails: list[str] = []
    for gn in general_names:
        if isinstance(gn, x509.DNSName):
            dns.append(normalize_dns(gn.value))
        elif isinstance(gn, x509.IPAddress):
            if not isinstance(gn.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise _rejected(f"IP SAN {gn.value} is a network, not an address", "names.ip")
            ips.append(gn.value)
        elif isinstance(gn, x509.UniformResourceIdentifier):
            uris.append(normalize_uri(gn.value))
        elif isinstance(gn, x509.RFC822Name):
            emails.append(normalize_email(gn.value))
        else:
            raise _rejected(
                f"subject alternative name of type {type(gn).__name__} is not supported",
                "names",
            )
    return Names(
        dns=tuple(dict.fromkeys(dns)),
        ip=tuple(dict.fromkeys(ips)),
        uri=tuple(dict.fromkeys(uris)),
        email=tuple(dict.fromkeys(emails)),
    )


def parse_name(text: str) -> Names:
    """Parse one ``type:value`` (or a bare DNS name / IP) as typed on a command line."""
    kind, sep, value = text.partition(":")
    if sep and kind in ("dns", "ip", "uri", "email"):
        if kind == "dns":
            return Names(dns=(normalize_dns(value),))
        if kind == "ip":
            return Names(ip=(ipaddress.ip_address(value),))
        if kind == "email":
            return Names(email=(normalize_email(value),))
        return Names(uri=(normalize_uri(value),))
    try:
        return Names(ip=(ipaddress.ip_address(text),))
    except ValueError:
        return Names(dns=(normalize_dns(text),))


def common_name(subject: x509.Name) -> str | None:
    attrs = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def canonical_names(values: object) -> object:
    """A list of names as people write them (``web.internal``, ``dns:web.internal``,
    ``ip:10.0.0.1``) as canonical ``type:value`` strings, in order, without repeats;
    anything but a list is handed back for the caller's type check (a pydantic
    ``BeforeValidator``). A bad name raises ValueError naming it."""
    if not isinstance(values, list | tuple):
        return values
    out: list[str] = []
    for text in values:
        try:
            out += parse_name(str(text)).as_strings()
        except (CertwrightError, ValueError) as e:
            raise ValueError(f"{text!r} is not a name: {e}") from None
    return tuple(dict.fromkeys(out))
