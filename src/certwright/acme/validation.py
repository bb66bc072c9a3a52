"""The validation authority: proves control of identifiers by talking to the network.

This module connects out, so it must not become an SSRF tool. Every address it connects
to is checked against the profile's ``validation_networks`` (loopback only if a profile
names it); names are resolved once per hop and the connection is pinned to the checked
address; redirects are followed at most ``max_redirects`` times, only to http on the
http-01 port or https on the tls-alpn-01 port; responses are capped in size and time.
It holds no key and imports nothing that signs (Boulder keeps its VA apart the same way).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import ssl
import urllib.parse
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename
import httpx
from cryptography import x509

from certwright.acme.problems import AcmeProblem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HTTP_BODY = 8 * 1024
# RFC 8737 3: the acmeIdentifier extension; its value is an OCTET STRING holding the
# SHA-256 digest of the key authorization.
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
ALPN = "acme-tls/1"


def key_authorization_digest(key_authorization: str) -> bytes:
    return hashlib.sha256(key_authorization.encode()).digest()


def dns01_value(key_authorization: str) -> str:
    """RFC 8555 8.4: base64url(SHA-256(key authorization)), no padding."""
    return base64.urlsafe_b64encode(key_authorization_digest(key_authorization)).rstrip(
        b"=").decode()


@dataclasses.dataclass(frozen=True)
class Settings:
    resolver: str | None  # "ip:port", or None for the system resolver
    http01_port: int
    tlsalpn01_port: int
    timeout: float
    max_redirects: int


def _problem(type_: str, detail: str) -> AcmeProblem:
    return AcmeProblem(type_, detail, 400 if type_ != "unauthorized" else 403)


class Validator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.resolver:
            host, _, port = settings.resolver.rpartition(":")
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [host.strip("[]")]
            r.port = int(port)
        else:
            r = dns.asyncresolver.Resolver()
        r.lifetime = settings.timeout
        r.timeout = settings.timeout
        self.resolver = r
        # RFC 8555 8.3: the CA does not check the certificate of an https redirect
        # target. One context for every fetch: making one per fetch cost 0.17 ms.
        self._unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._unverified.check_hostname = False
        self._unverified.verify_mode = ssl.CERT_NONE

    # -- DNS ----------------------------------------------------------------------------

    async def _query(self, name: str, rdtype: str) -> list[str] | None:
        """Record texts; None for NXDOMAIN/no answer; AcmeProblem(dns) on failure."""
        try:
            answer = await self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise _problem("dns", f"DNS lookup of {rdtype} {name} failed: "
                                  f"{type(e).__name__}") from None
        except dns.exception.DNSException as e:
            raise _problem("dns", f"DNS lookup of {rdtype} {name} failed: "
                                  f"{type(e).__name__}") from None
        if answer.rrset is None:
            return None
        return [r.to_text() for r in answer.rrset]

    async def resolve(self, name: str) -> list[IPAddress]:
        addrs: list[IPAddress] = []
        for rdtype in ("A", "AAAA"):
            for text in await self._query(name, rdtype) or []:
                addrs.append(ipaddress.ip_address(text))
        if not addrs:
            raise _problem("dns", f"no A or AAAA record for {name}")
        return addrs

    def _allowed(self, addrs: Sequence[IPAddress], networks: Sequence[IPNetwork],
                 what: str) -> list[IPAddress]:
        ok = [a for a in addrs if address_allowed(a, networks)]
        if not ok:
            shown = ", ".join(str(a) for a in addrs)
            raise _problem("connection", f"{what} resolves to {shown}, outside the networks "
                                         "this CA may connect to for validation")
        return ok

    async def _targets(self, host: str, networks: Sequence[IPNetwork]) -> list[IPAddress]:
        try:
            return self._allowed([ipaddress.ip_address(host.strip("[]"))], networks, host)
        except ValueError:
            return self._allowed(await self.resolve(host), networks, host)

    # -- http-01 (RFC 8555 8.3) ---------------------------------------------------------

    async def http01(self, host: str, token: str, key_authorization: str,
                     networks: Sequence[IPNetwork]) -> None:
        url = (f"http://{_url_host(host)}:{self.settings.http01_port}"
               f"/.well-known/acme-challenge/{token}")
        timeout = httpx.Timeout(self.settings.timeout)
        limit = self.settings.timeout * 2
        try:
            # The per-read timeout alone lets a responder trickle a byte at a time.
            async with asyncio.timeout(limit):
                for hop in range(self.settings.max_redirects + 1):
                    body, location = await self._fetch(url, networks, timeout, hop)
                    if location is None:
                        if body.strip() != key_authorization.encode():
                            # Nothing of the body is echoed: after a redirect it may be an
                            # internal page the requester must not read through us.
                            raise _problem("incorrectResponse",
                                           "the http-01 response is not the expected key "
                                           "authorization")
                        return
                    url = self._redirect(url, location)
                    if hop == self.settings.max_redirects:
                        break
        except TimeoutError:
            raise _problem("connection", f"timeout: http-01 validation took more than "
                                         f"{limit:g} s") from None
        raise _problem("connection", f"more than {self.settings.max_redirects} redirects")

    def _redirect(self, current: str, location: str) -> str:
        try:
            # The client reading the response accepts some Locations urllib does not
            # (port 99999, "+80"): the responder's mistake, not the server's.
            target = urllib.parse.urljoin(current, location)
            parts = urllib.parse.urlsplit(target)
            explicit = parts.port
        except ValueError:
            raise _problem("connection", "redirect to an invalid URL refused") from None
        allowed = {"http": self.settings.http01_port, "https": self.settings.tlsalpn01_port}
        if parts.scheme not in allowed:
            raise _problem("connection", f"redirect to {parts.scheme!r} URL refused: "
                                         "only http and https")
        port = explicit or (80 if parts.scheme == "http" else 443)
        if port != allowed[parts.scheme]:
            raise _problem("connection", f"redirect to port {port} refused: only "
                                         f"{allowed['http']} (http) and {allowed['https']} "
                                         "(https)")
        if not parts.hostname:
            raise _problem("connection", "redirect without a host")
        return target

    async def _fetch(self, url: str, networks: Sequence[IPNetwork],
                     timeout: httpx.Timeout, hop: int = 0) -> tuple[bytes, str | None]:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (80 if parts.scheme == "http" else 443)
        addrs = await self._targets(host, networks)
        last: AcmeProblem | None = None
        for addr in addrs:
            pinned = urllib.parse.urlunsplit(
                (parts.scheme, f"{_url_host(str(addr))}:{port}", parts.path or "/",
                 parts.query, ""))
            host_header = _url_host(host) if port in (80, 443) else f"{_url_host(host)}:{port}"
            # After a redirect, say only that the hop failed: status codes and timings of
            # arbitrary internal URLs would make validation a scanner.
            where = url if hop == 0 else f"the redirect target (hop {hop})"
            extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
            try:
                # trust_env=False keeps proxies out of it.
                async with httpx.AsyncClient(verify=self._unverified, trust_env=False,
                                             timeout=timeout,
                                             follow_redirects=False) as client:
                    req = client.build_request("GET", pinned, headers={
                        "Host": host_header, "User-Agent": "certwright-validation",
                        "Accept": "*/*",
                        # No compression: a small gzip body can inflate to gigabytes.
                        "Accept-Encoding": "identity"}, extensions=extensions)
                    resp = await client.send(req, stream=True)
                    try:
                        if resp.is_redirect:
                            return b"", resp.headers.get("location", "")
                        if resp.status_code != 200:
                            raise _problem("unauthorized",
                                           f"{where} answered HTTP {resp.status_code}"
                                           if hop == 0 else f"{where} did not answer 200")
                        encoding = resp.headers.get("content-encoding", "identity").lower()
                        if encoding not in ("", "identity"):
                            raise _problem("unauthorized", f"{where} answered with "
                                           "Content-Encoding; identity is required")
                        body = b""
                        async for chunk in resp.aiter_raw():
                            body += chunk
                            if len(body) > MAX_HTTP_BODY:
                                raise _problem("unauthorized",
                                               f"{where} answered more than {MAX_HTTP_BODY} "
                                               "bytes")
                        return body, None
                    finally:
                        await resp.aclose()
            except httpx.TimeoutException:
                last = _problem("connection", f"timeout fetching {where}")
            except httpx.HTTPError as e:
                last = _problem("connection", f"fetching {where} failed"
                                + (f": {type(e).__name__}" if hop == 0 else ""))
        assert last is not None
        raise last

    # -- dns-01 (RFC 8555 8.4) ----------------------------------------------------------

    async def dns01(self, name: str, key_authorization: str) -> None:
        qname = "_acme-challenge." + name.removeprefix("*.")
        texts = await self._query(qname, "TXT")
        if not texts:
            raise _problem("dns", f"no TXT record at {qname}")
        expected = dns01_value(key_authorization)
        found = ["".join(part.strip('"') for part in t.split('" "')) for t in texts]
        if expected not in found:
            raise _problem("incorrectResponse",
                           f"the TXT records at {qname} do not hold the expected value")

    # -- tls-alpn-01 (RFC 8737; RFC 8738 6 for IP addresses) ------------------------------

    async def tlsalpn01(self, identifier_type: str, value: str, key_authorization: str,
                        networks: Sequence[IPNetwork]) -> None:
        if identifier_type == "ip":
            addr = ipaddress.ip_address(value)
            sni = dns.reversename.from_address(str(addr)).to_text(omit_final_dot=True)
            targets = self._allowed([addr], networks, value)
        else:
            sni = value
            targets = await self._targets(value, networks)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the challenge certificate is self-signed
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols([ALPN])
        last: AcmeProblem | None = None
        for addr in targets:
            try:
                async with asyncio.timeout(self.settings.timeout):
                    _reader, writer = await asyncio.open_connection(
                        str(addr), self.settings.tlsalpn01_port, ssl=ctx, server_hostname=sni)
                try:
                    obj = writer.get_extra_info("ssl_object")
                    alpn = obj.selected_alpn_protocol() if obj else None
                    der = obj.getpeercert(binary_form=True) if obj else None
                finally:
                    writer.close()
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
            except TimeoutError:
                last = _problem("connection", f"timeout connecting to {addr} for tls-alpn-01")
                continue
            except (OSError, ssl.SSLError) as e:
                last = _problem("tls" if isinstance(e, ssl.SSLError) else "connection",
                                f"TLS connection to {addr}:{self.settings.tlsalpn01_port} "
                                f"failed: {type(e).__name__}")
                continue
            if alpn != ALPN:
                raise _problem("tls", f"the server did not negotiate ALPN {ALPN}")
            if not der:
                raise _problem("tls", "the server presented no certificate")
            self._check_alpn_certificate(der, identifier_type, value, key_authorization)
            return
        assert last is not None
        raise last

    @staticmethod
    def _check_alpn_certificate(der: bytes, identifier_type: str, value: str,
                                key_authorization: str) -> None:
        try:
            cert = x509.load_der_x509_certificate(der)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        except (ValueError, x509.ExtensionNotFound):
            raise _problem("unauthorized", "the tls-alpn-01 certificate lacks the "
                                           "subjectAltName or acmeIdentifier extension") from None
        names = list(san)
        if identifier_type == "ip":
            ok = names == [x509.IPAddress(ipaddress.ip_address(value))]
        else:
            ok = len(names) == 1 and isinstance(names[0], x509.DNSName) and \
                names[0].value.lower() == value.lower()
        if not ok:
            raise _problem("unauthorized", "the tls-alpn-01 certificate must name exactly "
                                           f"{value} in its subjectAltName")
        if not ext.critical:
            raise _problem("unauthorized", "the acmeIdentifier extension must be critical")
        raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
        expected = b"\x04\x20" + key_authorization_digest(key_authorization)
        if raw != expected:
            raise _problem("unauthorized", "the acmeIdentifier extension does not hold the "
                                           "expected key authorization digest")

    # -- CAA (RFC 8659) -----------------------------------------------------------------

    async def check_caa(self, name: str, wildcard: bool, identities: Sequence[str]) -> None:
        """Climb from the name towards the root; the first CAA record set found decides."""
        labels = name.removeprefix("*.").rstrip(".").split(".")
        for i in range(len(labels) - 1):
            domain = ".".join(labels[i:])
            records = await self._query(domain, "CAA")
            if not records:
                continue
            props = [_parse_caa(r) for r in records]
            # RFC 8659 4.1: an unknown property with the critical flag forbids issuance.
            critical = [t for f, t, _ in props if f & 128 and t not in KNOWN_CAA_TAGS]
            if critical:
                raise _problem("caa", f"CAA records at {domain} carry the critical "
                                      f"property {critical[0]!r}, which this CA does not know")
            tag = "issuewild" if wildcard and any(t == "issuewild" for _, t, _ in props) \
                else "issue"
            relevant = [v for _, t, v in props if t == tag]
            if not relevant:
                return  # only iodef or unknown non-critical tags: no restriction
            for v in relevant:
                issuer = v.split(";", 1)[0].strip().lower()
                if issuer and issuer in {i.lower() for i in identities}:
                    return
            raise _problem("caa", f"CAA records at {domain} do not allow this CA to issue "
                                  f"for {name}")


# Addresses no validation reaches through a broad network ("0.0.0.0/0", "::/0"): only a
# listed network inside the special range itself (say 127.0.0.0/8) lets them through.
SPECIAL_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fe80::/10", "ff00::/8"))


def _embedded_ipv4(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 (64:ff9b::/96) address reaches."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if addr in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def address_allowed(addr: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """May validation connect to ``addr``? Alias forms are judged by the IPv4 address they
    reach, and special addresses need a listed network within their special range."""
    real = _embedded_ipv4(addr)
    for candidate in {addr, real}:
        special = [s for s in SPECIAL_NETWORKS
                   if s.version == candidate.version and candidate in s]
        inside = [n for n in networks if n.version == candidate.version and candidate in n]
        if not inside:
            return False
        if special and not any(n.subnet_of(s) for n in inside for s in special  # type: ignore[arg-type]
                               if n.version == s.version):
            return False
    return True


KNOWN_CAA_TAGS = frozenset({"issue", "issuewild", "iodef", "issuemail", "contactemail",
                            "contactphone"})


def _parse_caa(text: str) -> tuple[int, str, str]:
    flags, tag, value = text.split(" ", 2)
    return int(flags), tag.lower(), value.strip('"')


def _url_host(host: str) -> str:
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


def settings_from(acme: object) -> Settings:
    """Build Settings from the configuration's ``acme`` section."""
    from certwright.acme.config import AcmeSettings

    assert isinstance(acme, AcmeSettings)
    return Settings(resolver=acme.dns_resolver, http01_port=acme.http01_port,
                    tlsalpn01_port=acme.tlsalpn01_port,
                    timeout=acme.timeout.total_seconds(), max_redirects=acme.max_redirects)


__all__ = ["Settings", "Validator", "dns01_value", "key_authorization_digest", "settings_from"]
