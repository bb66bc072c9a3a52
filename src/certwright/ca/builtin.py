"""Profiles defined in code, for the certificates the CA issues to its own server.

They go through the RA like any request (``policy.check`` looks them up before the
configured profiles), so they are decided, signed, stored and audited on the same path
as every front-end's. Their names start with "_", which a configured profile name
cannot (``profiles.Config``), so certwright.yaml can neither shadow nor widen them; they
accept only ``registry.INTERNAL``, which no front-end sends, so no client enrolls under
them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress

from pydantic import ValidationError

from certwright import registry
from certwright.ca.profiles import (
    Approval,
    Config,
    KeyRules,
    NameRules,
    Profile,
    ServerSettings,
    Validity,
)
from certwright.errors import CertwrightError, config_error
from certwright.pki.names import Names, parse_name

__all__ = ["HTTPS_LISTENER", "LISTENER_LIFETIME", "https_listener", "listener_hostnames",
           "listener_names", "listening_ip", "profile"]

# The HTTPS listener's own certificate (server/listener_cert.py).
HTTPS_LISTENER = "_https-listener"
# Short-lived: the server renews it at start once a third of it is left, and a
# certificate nobody tracks is one nobody remembers to revoke.
LISTENER_LIFETIME = dt.timedelta(days=30)
LISTENER_BACKDATE = dt.timedelta(minutes=5)


def listening_ip(listen: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``HOST:PORT`` when it is one literal IP address a client can
    connect to: not a name, not a wildcard (0.0.0.0, ::), no IPv6 zone. An empty HOST
    is 127.0.0.1, as the server binds it (server/run.py ``split_hostport``)."""
    host = listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv6Address) and ip.scope_id):
        return None
    return ip


def listener_hostnames(server: ServerSettings) -> tuple[str, ...]:
    """What the listener's certificate names: ``server.hostnames`` and the address the
    HTTPS listener binds when it is a literal IP, so a client given that address (the
    one ``serve`` prints, the one in ``https_listen``) verifies the certificate."""
    ip = listening_ip(server.https_listen)
    if ip is None:
        return server.hostnames
    for h in server.hostnames:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(h) == ip:
                return server.hostnames
    return (*server.hostnames, str(ip))


def listener_names(hostnames: tuple[str, ...]) -> Names:
    """``server.hostnames`` as the names of the listener's certificate."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for h in hostnames:
        try:
            n = parse_name(h)
        except (CertwrightError, ValueError) as e:
            raise config_error(f"server.hostnames: {h!r} is not a DNS name or IP address "
                               f"({e})") from None
        dns += n.dns
        ips += n.ip
    return Names(dns=tuple(dns), ip=tuple(ips))


@functools.lru_cache(maxsize=8)
def https_listener(hostnames: tuple[str, ...]) -> Profile:
    """Exactly the configured hostnames, 30 days, a TLS server's usages (RFC 5280
    4.2.1.3 digitalSignature, as ECDHE key exchange needs; 4.2.1.12 id-kp-serverAuth)."""
    names = listener_names(hostnames)
    try:
        return Profile(
            description="the server's own HTTPS listener",
            protocols=(registry.INTERNAL,),
            approval=Approval.AUTO,
            # The key the listener generates for itself (listener_cert.py).
            keys=KeyRules(rsa=False, ecdsa_curves=("P-256",), ed25519=False),
            names=NameRules(
                dns=names.dns,
                ip=tuple(ipaddress.ip_network(a) for a in names.ip),
                keep_cn=False,
                max_names=min(1000, max(1, len(names.dns) + len(names.ip))),
            ),
            validity=Validity(default=LISTENER_LIFETIME, max=LISTENER_LIFETIME,
                              backdate=LISTENER_BACKDATE),
            key_usage=("digital_signature",),
            extended_key_usage=("server_auth",),
        )
    except ValidationError as e:
        raise config_error(f"server.hostnames: {e}") from None


def profile(config: Config, name: str) -> Profile | None:
    """The built-in profile called ``name`` for this configuration, if there is one."""
    if name == HTTPS_LISTENER:
        return https_listener(listener_hostnames(config.server))
    return None
