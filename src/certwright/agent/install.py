"""Transactional install: versioned directories and one symlink that switches the pair.

Layout inside the spec's output directory ``D``::

    D/.certwright/<spec>/000007/   key.pem cert.pem [chain.pem fullchain.pem combined.pem
                                   bundle.p12]   one complete version, never changed again
    D/.certwright/<spec>/live  ->  000007        the only thing a switch changes
    D/<key>   -> .certwright/<spec>/live/key.pem    (the file names the spec gives)
    D/<cert>  -> .certwright/<spec>/live/cert.pem

The guarantee: at every instant, every file name of the spec resolves, through the single
``live`` symlink, into one version directory whose files were all written and fsynced
(and the directory fsynced) before ``live`` was switched by one rename(2). So a reader
that resolves the key and the certificate between two switches sees a matching pair;
killing the agent at any step leaves either the old pair or the new one. (A reader that
opens the key before a switch and the certificate after it can still mix them: services
read both at start or reload, which the deploy hook triggers after the switch.)

The new key is generated into a fresh version directory before the request is made, so
it never leaves that directory until the version is complete and checked. Existing plain
files at the spec's names (a certificate installed by hand) are first copied into a
version of their own and replaced by links with the same content, so even the first
switch changes the pair in one step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certwright.agent import fs
from certwright.agent.fs import AgentKey
from certwright.agent.spec import Output
from certwright.errors import CertwrightError, ErrorKind

STORE = ".certwright"
LIVE = "live"
_VERSION = re.compile(r"^\d{6}$")
# Role -> file name inside a version directory.
VERSION_FILES = {"key": "key.pem", "cert": "cert.pem", "chain": "chain.pem",
                 "fullchain": "fullchain.pem", "combined": "combined.pem",
                 "pkcs12": "bundle.p12"}
SECRET_ROLES = ("key", "combined", "pkcs12")

CRASH_ENV = "CERTWRIGHT_AGENT_CRASH_AT"


def crash_point(step: str) -> None:
    """Test hook: the agent kills itself (SIGKILL, no clean-up) at ``step`` when the
    environment names it, so tests can check what a crash there leaves on disk."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass(frozen=True)
class Material:
    key: AgentKey
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def _pem(certs: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class Installer:
    """The versioned store of one spec in its output directory. Use as a context manager:
    it checks the directory (``fs.check_directory``) and holds it open by descriptor."""

    def __init__(self, spec_name: str, output: Output) -> None:
        self.spec_name = spec_name
        self.output = output
        self.owner = fs.ids(output.owner, output.group)
        self._stack = contextlib.ExitStack()
        self.dir_fd = -1
        self.store_fd = -1

    def __enter__(self) -> Installer:
        fs.check_directory(self.output.directory)
        try:
            self.dir_fd = self._stack.enter_context(fs.open_dir(self.output.directory))
            base = fs.open_subdir(self.dir_fd, STORE, create=True, mode=0o755)
            self._stack.callback(os.close, base)
            self.store_fd = fs.open_subdir(base, self.spec_name, create=True, mode=0o755)
            self._stack.callback(os.close, self.store_fd)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- reading --------------------------------------------------------------------------

    def live_version(self) -> str | None:
        try:
            target = os.readlink(LIVE, dir_fd=self.store_fd)
        except FileNotFoundError:
            return None
        return target if _VERSION.match(target) else None

    def versions(self) -> list[str]:
        return sorted(n for n in os.listdir(self.store_fd) if _VERSION.match(n))

    def read(self, version: str, role: str) -> bytes | None:
        try:
            vfd = fs.open_subdir(self.store_fd, version)
        except FileNotFoundError:
            return None
        try:
            return fs.read_in(vfd, VERSION_FILES[role])
        except FileNotFoundError:
            return None
        finally:
            os.close(vfd)

    def current(self) -> tuple[bytes | None, bytes | None]:
        """The (key PEM, certificate PEM) a reader of the spec's file names sees now."""
        out: list[bytes | None] = []
        for role in ("key", "cert"):
            try:
                fd = os.open(getattr(self.output, role), os.O_RDONLY | os.O_CLOEXEC,
                             dir_fd=self.dir_fd)
            except FileNotFoundError:
                out.append(None)
                continue
            with os.fdopen(fd, "rb") as f:
                out.append(f.read(1 << 20))
        return out[0], out[1]

    def staged(self) -> str | None:
        """The newest version above the live one that holds only a key: a request that
        failed, or a run that was killed, before the certificate came; its key is reused
        for the next attempt."""
        live = self.live_version()
        for v in reversed(self.versions()):
            if live is not None and v <= live:
                break
            vfd = fs.open_subdir(self.store_fd, v)
            try:
                if os.listdir(vfd) == [VERSION_FILES["key"]]:
                    return v
            finally:
                os.close(vfd)
        return None

    # -- writing a version ----------------------------------------------------------------

    def stage_key(self, key: AgentKey) -> str:
        """A new version directory holding only the key; returns its name."""
        existing = self.versions()
        number = int(existing[-1]) + 1 if existing else 1
        version = f"{number:06d}"
        os.mkdir(version, 0o755, dir_fd=self.store_fd)
        vfd = fs.open_subdir(self.store_fd, version)
        try:
            if self.owner != (-1, -1):
                os.fchown(vfd, *self.owner)
            fs.write_new(vfd, VERSION_FILES["key"], fs.key_pem(key), self.output.key_mode,
                         self.owner)
            os.fsync(vfd)
        finally:
            os.close(vfd)
        os.fsync(self.store_fd)
        crash_point("key-written")
        return version

    def complete(self, version: str, material: Material) -> None:
        """Write every other file of the version, then fsync the directory."""
        files = self._render(material)
        vfd = fs.open_subdir(self.store_fd, version)
        try:
            for role, data in files.items():
                mode = self.output.key_mode if role in SECRET_ROLES else self.output.mode
                fs.write_new(vfd, VERSION_FILES[role], data, mode, self.owner)
            os.fsync(vfd)
        finally:
            os.close(vfd)
        crash_point("files-written")

    def _render(self, m: Material) -> dict[str, bytes]:
        leaf = _pem([m.leaf])
        chain = _pem(m.chain)
        # The full chain is always kept in the version: a renewal authenticated with the
        # current certificate (EST simplereenroll) presents it.
        out = {"cert": leaf, "fullchain": leaf + chain}
        o = self.output
        if o.chain is not None:
            out["chain"] = chain
        if o.combined is not None:
            out["combined"] = fs.key_pem(m.key) + leaf + chain
        if o.pkcs12 is not None:
            try:
                passphrase = o.pkcs12.passphrase_file.read_bytes().strip()
            except FileNotFoundError:
                raise CertwrightError(
                    ErrorKind.CONFIG, f"output.pkcs12.passphrase_file "
                    f"{o.pkcs12.passphrase_file}: no such file") from None
            if not passphrase:
                raise CertwrightError(ErrorKind.CONFIG, "output.pkcs12.passphrase_file is empty")
            out["pkcs12"] = pkcs12.serialize_key_and_certificates(
                self.spec_name.encode(), m.key, m.leaf, list(m.chain) or None,
                serialization.BestAvailableEncryption(passphrase))
        return out

    # -- switching ------------------------------------------------------------------------

    def activate(self, version: str) -> str | None:
        """Make ``version`` live; return the version that was live before (for rollback)."""
        previous = self.live_version()
        if previous is None:
            previous = self._import_existing()
        self._switch(version)
        crash_point("live-switched")
        self._link_all()
        crash_point("linked")
        return previous

    def _switch(self, version: str) -> None:
        tmp = f".{LIVE}.{os.getpid()}.{os.urandom(4).hex()}"
        os.symlink(version, tmp, dir_fd=self.store_fd)
        crash_point("live-staged")
        try:
            os.rename(tmp, LIVE, src_dir_fd=self.store_fd, dst_dir_fd=self.store_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.store_fd)
            raise
        os.fsync(self.store_fd)

    def rollback(self, previous: str | None, failed: str) -> None:
        """Put ``previous`` back (or, on a first install, remove the links) and drop the
        failed version."""
        if previous is not None:
            self._switch(previous)
        else:
            for name in self.output.files().values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.dir_fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(LIVE, dir_fd=self.store_fd)
            os.fsync(self.dir_fd)
        self.discard(failed)

    def _link_all(self) -> None:
        changed = False
        for role, name in self.output.files().items():
            target = f"{STORE}/{self.spec_name}/{LIVE}/{VERSION_FILES[role]}"
            try:
                if os.readlink(name, dir_fd=self.dir_fd) == target:
                    continue
            except (FileNotFoundError, OSError):
                pass
            self._replace_with_link(name, target)
            changed = True
        if changed:
            os.fsync(self.dir_fd)

    def _replace_with_link(self, name: str, target: str) -> None:
        tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.link"
        os.symlink(target, tmp, dir_fd=self.dir_fd)
        try:
            os.rename(tmp, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.dir_fd)
            raise

    def _import_existing(self) -> str | None:
        """Copy files a previous tool left at the spec's names into a version of their own
        and make it live, so that replacing them by links changes no content."""
        files = self.output.files()
        found: dict[str, bytes] = {}
        for role, name in files.items():
            try:
                st = os.stat(name, dir_fd=self.dir_fd)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dir_fd)
            with os.fdopen(fd, "rb") as f:
                found[role] = f.read(1 << 20)
        if "key" not in found or "cert" not in found:
            return None
        existing = self.versions()
        version = f"{int(existing[-1]) + 1 if existing else 1:06d}"
        os.mkdir(version, 0o755, dir_fd=self.store_fd)
        vfd = fs.open_subdir(self.store_fd, version)
        try:
            for role, data in found.items():
                mode = self.output.key_mode if role in SECRET_ROLES else self.output.mode
                fs.write_new(vfd, VERSION_FILES[role], data, mode, self.owner)
            os.fsync(vfd)
        finally:
            os.close(vfd)
        self._switch(version)
        self._link_all()
        return version

    # -- clean-up -------------------------------------------------------------------------

    def discard(self, version: str) -> None:
        if version == self.live_version():
            raise CertwrightError(ErrorKind.INTERNAL, f"version {version} is live")
        try:
            vfd = fs.open_subdir(self.store_fd, version)
        except FileNotFoundError:
            return
        try:
            for name in os.listdir(vfd):
                os.unlink(name, dir_fd=vfd)
        finally:
            os.close(vfd)
        os.rmdir(version, dir_fd=self.store_fd)
        for name in os.listdir(self.store_fd):
            if name.startswith(f".{LIVE}."):  # a switch a crash interrupted
                os.unlink(name, dir_fd=self.store_fd)

    def prune(self, keep: str | None) -> None:
        """Remove every version but the live one and ``keep`` (the one before it, for a
        manual rollback), and leftovers of interrupted runs."""
        live = self.live_version()
        for v in self.versions():
            if v not in (live, keep):
                self.discard(v)
        for name in os.listdir(self.dir_fd):
            if name.startswith(".") and (name.endswith(".link") or name.endswith(".tmp")):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self.dir_fd)


def version_dir(output: Output, spec_name: str) -> Path:
    return output.directory / STORE / spec_name


def live_pair(output: Output, spec_name: str) -> tuple[Path, Path] | None:
    """The live (key, full chain) files, for authenticating with the current certificate."""
    live = version_dir(output, spec_name) / LIVE
    key, chain = live / VERSION_FILES["key"], live / VERSION_FILES["fullchain"]
    if not chain.exists():  # a version imported from files installed by hand
        chain = live / VERSION_FILES["cert"]
    return (key, chain) if key.exists() and chain.exists() else None


def spec_files(output: Output) -> dict[str, Path]:
    return {role: output.directory / name for role, name in output.files().items()}
