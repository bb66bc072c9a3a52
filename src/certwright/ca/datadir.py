"""The data directory: layout, ``init``, and opening a working CA from it.

    DIR/certwright.yaml     configuration and profiles
    DIR/root.pem            the trust anchor to give clients
    DIR/chain.pem           the issuing CA certificate (what servers send after the leaf)
    DIR/ca/root.key         0600, root CA key (keep offline once initialized, if you can)
    DIR/ca/root.pem
    DIR/ca/issuing.key      0600, issuing CA key (with keys.provider: software)
    DIR/ca/issuing.pem
    DIR/certwright.db       the SQLite store (unless store.url names PostgreSQL)
    DIR/tls/                the HTTPS listener's own key and certificate
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import stat as stat_
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certwright.ca import hierarchy
from certwright.ca.authority import Authority, Urls
from certwright.ca.keys import KeyProvider, KeyRole, open_provider
from certwright.ca.profiles import ENV_PREFIX, Config, parse_config_text
from certwright.ca.revocation import CrlPublisher, OcspResponder
from certwright.ca.service import CertificateAuthority
from certwright.clock import Clock, SystemClock
from certwright.errors import CertwrightError, ErrorKind, config_error
from certwright.pki.keys import CA_KEY_TYPES, private_key_pem, write_atomic
from certwright.store.repo import Store

CONFIG_NAME = "certwright.yaml"


@dataclasses.dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def root_pem(self) -> Path:
        return self.root / "root.pem"

    @property
    def chain_pem(self) -> Path:
        return self.root / "chain.pem"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    def initialized(self) -> bool:
        return self.config.exists() or self.ca_dir.exists()


def check_directory(path: Path) -> None:
    """Refuse a data directory another user could swap files in: it must belong to this
    user (or root) and be writable by nobody else."""
    st = path.lstat()
    if stat_.S_ISLNK(st.st_mode) and st.st_uid not in (0, os.geteuid()):
        raise config_error(f"{path} is a symbolic link owned by another user")
    st = path.stat()
    if not stat_.S_ISDIR(st.st_mode):
        raise config_error(f"{path} is not a directory")
    if st.st_uid not in (0, os.geteuid()):
        raise config_error(f"{path} belongs to another user (uid {st.st_uid}); refusing it")
    if st.st_mode & 0o022:
        raise config_error(f"{path} is writable by group or others (mode "
                           f"{oct(st.st_mode & 0o777)}); refusing it: chmod go-w {path}")


def default_config(*, hostnames: list[str], http: str, https: str, http_url: str,
                   https_url: str, store_url: str = "sqlite:///certwright.db") -> str:
    hosts = ", ".join(hostnames)
    return f"""\
# certwright configuration. Every key is checked on load; a typo is an error.
# Durations: 90d, 12h, 30m, 2w. Changes are recorded in the audit log when the CA next
# opens this file.

server:
  hostnames: [{hosts}]          # names in the HTTPS listener's own certificate
  http_listen: {http}           # CRL, OCSP, CA certificates, health (plain HTTP)
  https_listen: {https}         # enrollment protocols
  http_url: {http_url}          # base URL written into certificates (CRL DP, AIA)
  https_url: {https_url}
  max_body_bytes: 262144

store:
  # A path relative to this directory, or postgresql://user@host/db for replicas.
  url: {store_url}

keys:
  provider: software           # CA keys in 0600 files under ca/

issuance:
  lint: false                  # pkilint every certificate before signing (needs pkilint)
  crl_validity: 7d
  crl_refresh_before: 3d
  ocsp_validity: 4d

acme:
  dns_resolver: null           # IP:PORT of the DNS resolver for validation; null: system's
  http01_port: 80              # where http-01 validation connects
  tlsalpn01_port: 443          # where tls-alpn-01 validation connects
  timeout: 10s
  nonce_lifetime: 1h

default_profile: tls-server

profiles:
  tls-server:
    description: TLS server certificates for internal services
    protocols: [acme, est, scep, cmp, cli]
    approval: auto
    keys: {{rsa: true, rsa_min_bits: 2048, ecdsa_curves: [P-256, P-384], ed25519: false}}
    names:
      # "*.internal" matches every name below .internal (ICANN's private-use TLD).
      dns: ["*.internal", "*.home.arpa", "*.test", "localhost", "*.localhost"]
      wildcards: false
      ip: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 127.0.0.0/8, "fd00::/8", "::1/128"]
      keep_cn: true
    validity: {{default: 90d, max: 90d}}
    key_usage: [digital_signature, key_encipherment]
    extended_key_usage: [server_auth]
    acme:                      # the directory is https://HOST:PORT/acme/tls-server/directory
      eab_required: false
      challenges: [http-01, dns-01, tls-alpn-01]
      # Validation connects only inside these networks (add 127.0.0.0/8 to test locally).
      validation_networks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "fc00::/7"]
      rate_limits: {{window: 3h, orders_per_account: 300, pending_authorizations_per_account: 300}}
    est:                       # https://HOST:PORT/.well-known/est/tls-server/simpleenroll
      serverkeygen: false      # a server's key stays on the server that uses it

  tls-client:
    description: TLS client certificates for services and people
    protocols: [est, scep, cmp, cli]
    approval: auto
    keys: {{rsa: true, rsa_min_bits: 2048, ecdsa_curves: [P-256, P-384], ed25519: true}}
    names:
      dns: ["*.internal", "*.home.arpa", "*.test"]
      uri: ["spiffe://"]
      email: ["*"]
      keep_cn: true
    validity: {{default: 30d, max: 90d}}
    key_usage: [digital_signature]
    extended_key_usage: [client_auth]
    est:                       # https://HOST:PORT/.well-known/est/tls-client/simpleenroll
      basic_auth: true         # `certwright est credential add NAME --profile tls-client`
      serverkeygen: false
      reenroll_allow_changes: false
      client_trust_anchors: [] # extra CA files (relative to this directory) for mutual TLS

  device:
    description: device identities (SCEP, EST, CMP), approved by an operator
    protocols: [est, scep, cmp, cli]
    approval: manual
    keys: {{rsa: true, rsa_min_bits: 2048, ecdsa_curves: [P-256, P-384], ed25519: true}}
    names:
      dns: ["*.devices.internal"]
      uri: ["urn:dev:"]
      keep_cn: true
      cn_as_san: true            # many SCEP devices send only a CN
    validity: {{default: 365d, max: 397d}}
    key_usage: [digital_signature, key_encipherment]
    extended_key_usage: [client_auth]
    est:                       # https://HOST:PORT/.well-known/est/device/simpleenroll
      serverkeygen: true       # for devices that cannot make a good key themselves
      retry_after: 60s         # the 202 answer while an operator has not decided
      client_trust_anchors: [] # e.g. [manufacturer-ca.pem]: IDevIDs authenticate enrollment
"""


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init(
    path: Path,
    *,
    key_type: str = "ec-p384",
    organization: str = "certwright",
    hostnames: list[str] | None = None,
    http: str = "127.0.0.1:8080",
    https: str = "127.0.0.1:8443",
    store_url: str = "sqlite:///certwright.db",
    clock: Clock | None = None,
) -> Layout:
    """Create a CA in ``path``. Refuses, changing nothing, if one is already there.

    Everything is built in a staging directory inside ``path`` and moved into place at
    the end, the configuration file last (its presence marks the CA initialized).
    """
    clock = clock or SystemClock()
    if key_type not in CA_KEY_TYPES:
        raise CertwrightError(ErrorKind.MALFORMED,
                              f"unknown key type {key_type!r}; choose {', '.join(CA_KEY_TYPES)}")
    layout = Layout(path)
    if layout.initialized():
        raise CertwrightError(ErrorKind.CONFLICT,
                              f"{path} already holds a CA ({CONFIG_NAME} or ca/ exists); "
                              "nothing was changed")
    hostnames = hostnames or ["localhost"]
    http_url = f"http://{http}"
    https_host = hostnames[0]
    https_port = https.rpartition(":")[2]
    https_url = f"https://{https_host}:{https_port}"
    config_text = default_config(hostnames=hostnames, http=http, https=https,
                                 http_url=http_url, https_url=https_url, store_url=store_url)
    config = parse_config_text(config_text, "(default configuration)")

    created = not path.exists()
    # 0750: the store holds EAB keys and the configuration may hold a database password.
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    try:
        check_directory(path)
    except CertwrightError:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    stage = path / f".init-{os.getpid()}"
    try:
        stage.mkdir(mode=0o700)
        (stage / "ca").mkdir(mode=0o700)
        # The issuing key is born in the configured provider (for software, a 0600 file
        # in the staging ca/ that moves into place with the rest).
        provider = open_provider(config.keys, stage / "ca")
        h = hierarchy.create(key_type=key_type, organization=organization, now=clock.now(),
                             http_url=http_url,
                             issuing_key=provider.ensure(KeyRole.ISSUING, key_type))
        write_atomic(stage / "ca" / "root.key", private_key_pem(h.root_key), 0o600)
        write_atomic(stage / "ca" / "root.pem", _pem(h.root), 0o644)
        write_atomic(stage / "ca" / "issuing.pem", _pem(h.issuing), 0o644)
        write_atomic(stage / "root.pem", _pem(h.root), 0o644)
        write_atomic(stage / "chain.pem", _pem(h.issuing), 0o644)
        write_atomic(stage / CONFIG_NAME, config_text.encode(), 0o600)
        if config.store.url.startswith("sqlite:///") and not config.store.url.startswith(
                "sqlite:////"):
            # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files
            # the database file's mode.
            db = stage / config.store.url[len("sqlite:///"):]
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))

        store = Store.open(config.store.url, stage)
        try:
            store.migrate()
            with store.write() as conn:
                store.append_audit(
                    conn, "ca.initialized", actor="operator", subject=hierarchy.issuer_id(
                        h.issuing), at=clock.now(),
                    data={"key_type": key_type,
                          "root": h.root.fingerprint(hashes.SHA256()).hex(),
                          "issuing": h.issuing.fingerprint(hashes.SHA256()).hex(),
                          "root_subject": h.root.subject.rfc4514_string(),
                          "issuing_subject": h.issuing.subject.rfc4514_string()},
                )
                _record_config(store, conn, config_text, clock, initial=True)
        finally:
            store.close()
        # Move into place; the configuration last.
        for name in sorted(os.listdir(stage), key=lambda n: n == CONFIG_NAME):
            os.rename(stage / name, path / name)
        stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return layout


def _record_config(store: Store, conn: object, text: str, clock: Clock,
                   *, initial: bool = False) -> None:
    from sqlalchemy.engine import Connection

    assert isinstance(conn, Connection)
    digest = hashlib.sha256(text.encode()).hexdigest()
    previous = store.setting("config_sha256", conn)
    if previous == digest:
        return
    store.put_setting(conn, "config_sha256", digest)
    store.append_audit(conn, "config.loaded" if initial else "config.changed",
                       actor="operator", subject=CONFIG_NAME, at=clock.now(),
                       data={"sha256": digest, "previous": previous, "text": text})


def load(path: Path) -> tuple[Layout, Config, str]:
    layout = Layout(path)
    if not layout.config.exists():
        raise config_error(f"{layout.config}: no such file (run `certwright init --data {path}`)")
    check_directory(path)
    if layout.ca_dir.exists():
        check_directory(layout.ca_dir)
    text = layout.config.read_text()
    config = parse_config_text(text, str(layout.config))
    # What the audit log records as "the configuration": the file and the environment
    # overrides in force, so a change made through either is recorded.
    overrides = sorted(f"{k}={v}" for k, v in os.environ.items()
                       if k.startswith(ENV_PREFIX) and "__" in k)
    if overrides:
        text += "\n# environment overrides:\n" + "".join(f"# {o}\n" for o in overrides)
    return layout, config, text


def _load_cert(p: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(p.read_bytes())
    except (OSError, ValueError) as e:
        raise config_error(f"{p}: cannot load the CA certificate: {e}") from None


def open_ca(path: Path, *, clock: Clock | None = None, migrate: bool = False,
            key_provider: KeyProvider | None = None) -> CertificateAuthority:
    """Open the CA in ``path``: configuration, store, key provider, Authority, CRL, OCSP.

    ``key_provider`` replaces the one the configuration names (tests wrap it).
    """
    clock = clock or SystemClock()
    layout, config, text = load(path)
    issuing = _load_cert(layout.ca_dir / "issuing.pem")
    provider = key_provider or open_provider(config.keys, layout.ca_dir)
    # Both fail closed (CONFIG) on a missing key or one that is not the CA's.
    signer = provider.signer(KeyRole.ISSUING, issuing)
    ocsp_signer = provider.signer(KeyRole.OCSP, issuing)
    store = Store.open(config.store.url, path)
    try:
        if migrate:
            store.migrate()
        elif not store.schema_is_current():
            raise config_error("the store's schema is not current: run `certwright db upgrade`")
        with store.write() as conn:
            _record_config(store, conn, text, clock)
        iid = hierarchy.issuer_id(issuing)
        base = config.server.http_url
        urls = Urls(ca_issuers=f"{base}/ca/{iid}.der", crl=f"{base}/crl/{iid}.crl",
                    ocsp=f"{base}/ocsp")
        authority = Authority(signer=signer, issuer_id=iid, urls=urls, store=store,
                              clock=clock, lint_before_signing=config.issuance.lint)
        crl = CrlPublisher(signer=signer, issuer_id=iid, crl_url=urls.crl, store=store,
                           clock=clock, validity=config.issuance.crl_validity,
                           refresh_before=config.issuance.crl_refresh_before)
        responder = OcspResponder(signer=ocsp_signer, issuer_id=iid, store=store, clock=clock,
                                  validity=config.issuance.ocsp_validity)
        root = _load_cert(layout.ca_dir / "root.pem")
    except BaseException:
        store.close()  # a CA that failed to open leaves no connection pool behind
        raise
    return CertificateAuthority(config=config, store=store, authority=authority, crl=crl,
                                ocsp=responder, chain=(issuing,), clock=clock, root=root,
                                layout=layout)


@contextlib.contextmanager
def opened(path: Path, *, clock: Clock | None = None, migrate: bool = False,
           key_provider: KeyProvider | None = None) -> Iterator[CertificateAuthority]:
    ca = open_ca(path, clock=clock, migrate=migrate, key_provider=key_provider)
    try:
        yield ca
    finally:
        ca.store.close()
