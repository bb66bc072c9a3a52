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
import importlib.resources
import os
import shutil
import stat as stat_
import string
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy.engine import Connection

from certwright.ca import hierarchy
from certwright.ca.authority import Authority, Urls
from certwright.ca.keys import KeyProvider, KeyRole, open_provider
from certwright.ca.profiles import ENV_PREFIX, Config, parse_config_text
from certwright.ca.revocation import CrlPublisher, OcspResponder
from certwright.ca.service import CertificateAuthority
from certwright.clock import Clock, SystemClock
from certwright.errors import CertwrightError, ErrorKind, config_error
from certwright.pki.keys import CA_KEY_TYPES, private_key_pem, write_atomic
from certwright.store.repo import CA_ROOT_SETTING, Store

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
    """The configuration ``init`` writes: ``certwright/default-config.yaml`` (package
    data, beside the registry that names its front-ends) with this CA's values."""
    template = string.Template(
        importlib.resources.files("certwright").joinpath("default-config.yaml").read_text())
    return template.substitute(hosts=", ".join(hostnames), http=http, https=https,
                               http_url=http_url, https_url=https_url, store_url=store_url)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _root_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _shown(url: str) -> str:
    """The store URL as messages show it: without a password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _held_elsewhere(url: str, held: str) -> CertwrightError:
    return CertwrightError(
        ErrorKind.CONFLICT,
        f"the database {_shown(url)} already holds a CA (root SHA-256 {held}); nothing was "
        "changed. To run another server of that CA (a replica), do not run init: copy the "
        "first data directory (its ca/ files and certwright.yaml) to the new server instead")


def _refuse_held_database(url: str) -> None:
    """Before anything is created: refuse a database that already belongs to a CA (a
    second CA in it would mix both CAs' certificates, requests and audit log). Only
    reads: a refused init writes nothing to it. A relative SQLite file is new (it is
    created in the new data directory), and an absolute one that does not exist yet is
    empty (connecting would create it)."""
    if url.startswith("sqlite:///") and (not url.startswith("sqlite:////")
                                         or not Path(url[len("sqlite:///"):]).exists()):
        return
    store = Store.open(url)
    try:
        with store.read() as conn:
            held = store.holder(conn)
    finally:
        store.close()
    if held is not None:
        raise _held_elsewhere(url, held)


def _refuse_other_ca(held: str | None, mine: str, path: Path, url: str) -> None:
    if held is not None and held != mine:
        raise config_error(
            f"{path} holds the CA with root SHA-256 {mine}, but its store {_shown(url)} "
            f"belongs to another CA (root SHA-256 {held}); refusing to mix two CAs in one "
            f"database: point store.url in {path / CONFIG_NAME} at this CA's own database")


def _check_holder(store: Store, conn: Connection, root: x509.Certificate, path: Path,
                  url: str, clock: Clock) -> None:
    """The database must belong to this data directory's CA. One that names no CA (made
    before ``init`` recorded it, with no ``ca.initialized`` record either) is adopted by
    the first CA that opens it."""
    mine = _root_sha256(root)
    held = store.holder(conn)
    if held is None:
        store.put_setting(conn, CA_ROOT_SETTING, mine)
        store.append_audit(conn, "store.adopted", actor="operator", subject=mine,
                           at=clock.now(), data={"root": mine})
        return
    _refuse_other_ca(held, mine, path, url)
    if store.setting(CA_ROOT_SETTING, conn) is None:
        # A database older than the setting whose ca.initialized record names this CA.
        store.put_setting(conn, CA_ROOT_SETTING, mine)


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

    _refuse_held_database(config.store.url)
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
                # Again under the write lock: another init may have claimed it meanwhile.
                held = store.holder(conn)
                if held is not None:
                    raise _held_elsewhere(config.store.url, held)
                store.put_setting(conn, CA_ROOT_SETTING, _root_sha256(h.root))
                store.append_audit(
                    conn, "ca.initialized", actor="operator", subject=hierarchy.issuer_id(
                        h.issuing), at=clock.now(),
                    data={"key_type": key_type,
                          "root": _root_sha256(h.root),
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


def _record_config(store: Store, conn: Connection, text: str, clock: Clock,
                   *, initial: bool = False) -> None:
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
    root = _load_cert(layout.ca_dir / "root.pem")
    store = Store.open(config.store.url, path)
    try:
        if migrate:
            # Not even the schema of another CA's database is touched (holder() reads
            # tables every schema version has).
            with store.read() as conn:
                _refuse_other_ca(store.holder(conn), _root_sha256(root), path,
                                 config.store.url)
            store.migrate()
        elif not store.schema_is_current():
            raise config_error("the store's schema is not current: run `certwright db upgrade`")
        with store.write() as conn:
            _check_holder(store, conn, root, path, config.store.url, clock)
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
    except BaseException:
        store.close()  # a CA that failed to open leaves no connection pool behind
        raise
    return CertificateAuthority(config=config, store=store, authority=authority, crl=crl,
                                ocsp=responder, chain=(issuing,), clock=clock, root=root,
                                layout=layout, keys=provider)


@contextlib.contextmanager
def opened(path: Path, *, clock: Clock | None = None, migrate: bool = False,
           key_provider: KeyProvider | None = None) -> Iterator[CertificateAuthority]:
    ca = open_ca(path, clock=clock, migrate=migrate, key_provider=key_provider)
    try:
        yield ca
    finally:
        ca.store.close()
