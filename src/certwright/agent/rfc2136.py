"""dns-01 records through RFC 2136 dynamic updates, signed with TSIG (RFC 8945).

The record goes to the zone's primary (``rfc2136.server``) as one UPDATE adding the TXT
value, and is taken away after validation by an UPDATE deleting that value only (a name
being validated for itself and for its wildcard holds two values at once, RFC 8555 8.4).
The zone is the spec's, or the owner of the SOA the server gives for the name.

The TSIG secret is read from ``key_file`` when needed and goes nowhere but into the HMAC:
no error message or log line quotes it, nor the file's content.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from certwright.agent.spec import Rfc2136
from certwright.errors import CertwrightError, ErrorKind

log = logging.getLogger("certwright.agent")

_CLAUSE = re.compile(r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}', re.S)
_ALGORITHM = re.compile(r'algorithm\s+"?(?P<v>[A-Za-z0-9-]+)"?\s*;')
_SECRET = re.compile(r'secret\s+"(?P<v>[^"]*)"\s*;')
KEY_FILE_LIMIT = 64 * 1024
ALGORITHMS = frozenset({"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384",
                        "hmac-sha512"})


def _error(detail: str, kind: ErrorKind = ErrorKind.CONFIG) -> CertwrightError:
    return CertwrightError(kind, detail, rule="issuer.acme.challenge.dns-01.rfc2136")


@dataclasses.dataclass(frozen=True, repr=False)
class TsigKey:
    name: str
    algorithm: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret
        return f"TsigKey({self.name!r}, {self.algorithm!r})"

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, self.algorithm)


def load_key(cfg: Rfc2136) -> TsigKey:
    """The TSIG key: a BIND ``key "name" { algorithm ...; secret "..."; };`` clause (as
    ``tsig-keygen`` writes it) or the base64 secret alone; the spec's ``key_name`` and
    ``algorithm`` win over the clause's."""
    where = f"rfc2136.key_file {cfg.key_file}"
    try:
        with cfg.key_file.open("rb") as f:
            raw = f.read(KEY_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise _error(f"{where}: no such file") from None
    except OSError as e:
        raise _error(f"{where}: {e.strerror}") from None
    if len(raw) > KEY_FILE_LIMIT:
        raise _error(f"{where}: larger than {KEY_FILE_LIMIT} bytes")
    text = raw.decode("utf-8", errors="replace")
    name: str | None = cfg.key_name
    algorithm: str | None = cfg.algorithm
    encoded = text.strip()
    clause = _CLAUSE.search(text)
    if clause is not None:
        secret = _SECRET.search(clause["body"])
        if secret is None:
            raise _error(f"{where}: the key clause has no secret")
        encoded = secret["v"]
        name = name or clause["name"]
        found = _ALGORITHM.search(clause["body"])
        algorithm = algorithm or (found["v"].lower() if found else None)
    if name is None:
        raise _error(f"{where} holds only a secret: give rfc2136.key_name")
    try:
        secret_bytes = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _error(f"{where}: the secret is not base64") from None
    if not secret_bytes:
        raise _error(f"{where}: the secret is empty")
    algorithm = algorithm or "hmac-sha256"
    if algorithm not in ALGORITHMS:
        raise _error(f"{where}: algorithm {algorithm!r} is not one of "
                     f"{', '.join(sorted(ALGORITHMS))}")
    return TsigKey(name, algorithm, secret_bytes)


def _server(cfg: Rfc2136) -> tuple[str, int]:
    host, _, port = cfg.server.rpartition(":")
    return host.strip("[]"), int(port)


def _send(cfg: Rfc2136, msg: dns.message.Message, what: str) -> dns.message.Message:
    host, port = _server(cfg)
    timeout = cfg.timeout.total_seconds()
    try:
        return dns.query.tcp(msg, host, port=port, timeout=timeout)
    except dns.tsig.PeerError as e:
        # The server refused our signature: a wrong key name, secret or algorithm.
        raise _error(f"{what} at {cfg.server}: the server rejected the TSIG signature "
                     f"({type(e).__name__})") from None
    except dns.exception.Timeout:
        raise _error(f"{what} at {cfg.server}: no answer within {timeout:g} s",
                     ErrorKind.INTERNAL) from None
    except (dns.exception.DNSException, OSError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise _error(f"{what} at {cfg.server}: {detail}", ErrorKind.INTERNAL) from None


def find_zone(cfg: Rfc2136, fqdn: str) -> str:
    """The zone ``fqdn`` is in, as its primary tells: the owner of the SOA in the answer
    (the name is a zone apex) or in the authority section (RFC 2308 2: a negative answer
    carries the zone's SOA)."""
    if cfg.zone is not None:
        return cfg.zone
    query = dns.message.make_query(fqdn, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    answer = _send(cfg, query, f"SOA query for {fqdn}")
    for section in (answer.answer, answer.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA:
                return str(rrset.name.to_text(omit_final_dot=True))
    raise _error(f"{cfg.server} gave no SOA for {fqdn} "
                 f"({dns.rcode.to_text(answer.rcode())}): is it the zone's primary? Give "
                 "rfc2136.zone")


def _update(cfg: Rfc2136, key: TsigKey, zone: str, fqdn: str, value: str, add: bool) -> None:
    msg = dns.update.UpdateMessage(zone, keyring=key.key())
    name = dns.name.from_text(fqdn)
    if add:
        msg.add(name, cfg.ttl, dns.rdatatype.TXT, f'"{value}"')
    else:
        msg.delete(name, dns.rdatatype.TXT, f'"{value}"')
    what = f"RFC 2136 {'add' if add else 'delete'} of TXT {fqdn} in zone {zone}"
    answer = _send(cfg, msg, what)
    rcode = answer.rcode()
    if rcode != dns.rcode.NOERROR:
        hint = {dns.rcode.REFUSED: " (does the zone allow updates with this key?)",
                dns.rcode.NOTAUTH: " (the server is not the zone's primary, or the key is "
                                   "unknown to it)",
                dns.rcode.NOTZONE: " (the name is not in the zone)"}.get(rcode, "")
        raise _error(f"{what} at {cfg.server}: {dns.rcode.to_text(rcode)}{hint}")


@contextlib.contextmanager
def record(cfg: Rfc2136, fqdn: str, value: str) -> Iterator[None]:
    """The TXT value at ``fqdn`` while the block runs."""
    key = load_key(cfg)
    zone = find_zone(cfg, fqdn)
    _update(cfg, key, zone, fqdn, value, add=True)
    log.info("dns-01: TXT %s added in zone %s at %s", fqdn, zone, cfg.server)
    try:
        yield
    finally:
        try:
            _update(cfg, key, zone, fqdn, value, add=False)
        except CertwrightError as e:
            log.warning("%s", e)
