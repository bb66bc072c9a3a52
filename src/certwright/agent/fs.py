"""Files on the target: directory safety checks, writes through a directory handle, keys.

Everything the agent writes goes through an open directory descriptor (``dir_fd=``), so a
path component swapped after the check cannot redirect a write. Files are created with
``O_CREAT|O_EXCL|O_NOFOLLOW`` in their final mode (a key is 0600 from its first byte,
never chmod-ed after), fsynced, renamed into place, and the directory fsynced.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certwright.agent.spec import KeySpec
from certwright.errors import CertwrightError, ErrorKind

AgentKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def unsafe(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.CONFIG, detail, rule="output.directory")


def check_directory(path: Path, *, uid: int | None = None) -> None:
    """Refuse a directory others could write into or redirect.

    Every component from ``/`` down is checked: a symlink must belong to root or to the
    agent's user; every directory must belong to one of them; none may be writable by
    others (this refuses shared temporary directories such as /tmp, sticky bit or not:
    anyone may plant a name there first); the directory itself may not be writable by its
    group either, and an ancestor only when that group is root's.
    """
    me = os.geteuid() if uid is None else uid
    trusted = {0, me}
    if not path.is_absolute():
        raise unsafe(f"{path}: not an absolute path")
    current = Path("/")
    _check_dir(current, os.lstat(current), trusted, last=len(path.parts) == 1)
    pending = list(path.parts[1:])
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            raise unsafe(f"{candidate}: no such directory") from None
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in trusted:
                raise unsafe(f"{candidate}: a symlink owned by uid {st.st_uid}, not by root "
                             "or the agent's user")
            hops += 1
            if hops > 40:
                raise unsafe(f"{path}: too many levels of symlinks")
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
                pending = list(target.parts[1:]) + pending
            else:
                pending = list(target.parts) + pending
            continue
        _check_dir(candidate, st, trusted, last=not any(p not in ("", ".") for p in pending))
        current = candidate


def _check_dir(p: Path, st: os.stat_result, trusted: set[int], *, last: bool) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise unsafe(f"{p}: not a directory")
    if st.st_uid not in trusted:
        raise unsafe(f"{p}: owned by uid {st.st_uid}, not by root or the agent's user")
    if st.st_mode & stat.S_IWOTH:
        shared = " (a shared temporary directory)" if st.st_mode & stat.S_ISVTX else ""
        raise unsafe(f"{p}: writable by others{shared}")
    if st.st_mode & stat.S_IWGRP and (last or st.st_gid != 0):
        raise unsafe(f"{p}: writable by its group (gid {st.st_gid})")


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    fd = os.open(path, _DIR | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def open_subdir(dir_fd: int, name: str, *, create: bool = False, mode: int = 0o755) -> int:
    """Open (or create) ``name`` inside ``dir_fd``, refusing a symlink there."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=dir_fd)
    return os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=dir_fd)


def ids(owner: str | int | None, group: str | int | None) -> tuple[int, int]:
    """uid and gid (-1: unchanged) for fchown."""
    uid = gid = -1
    try:
        if owner is not None:
            uid = owner if isinstance(owner, int) else pwd.getpwnam(owner).pw_uid
        if group is not None:
            gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
    except KeyError as e:
        raise CertwrightError(ErrorKind.CONFIG, f"no such user or group {e.args[0]}") from None
    return uid, gid


def write_new(dir_fd: int, name: str, data: bytes, mode: int,
              owner: tuple[int, int] = (-1, -1)) -> None:
    """Write ``data`` under a temporary name in ``dir_fd`` (created exclusively in ``mode``,
    owner set before the first byte), fsync, rename to ``name``; the caller fsyncs the
    directory once for all the files it wrote."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, _CREATE, mode, dir_fd=dir_fd)
    try:
        try:
            if owner != (-1, -1):
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def read_in(dir_fd: int, name: str, limit: int = 1 << 20) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        out = b""
        while chunk := os.read(fd, 65536):
            out += chunk
            if len(out) > limit:
                raise CertwrightError(ErrorKind.CONFIG, f"{name}: larger than {limit} bytes")
        return out
    finally:
        os.close(fd)


def generate_key(spec: KeySpec) -> AgentKey:
    if spec.type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.bits)
    if spec.type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curves: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(),
                                           "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[spec.curve])


def key_pem(key: AgentKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(data: bytes, source: str) -> AgentKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The parser's message could quote the file: say only what is wrong.
        raise CertwrightError(ErrorKind.CONFIG, f"{source}: not an unencrypted PEM private key"
                              ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise CertwrightError(ErrorKind.CONFIG, f"{source}: unsupported key type")
    return key


def key_matches(key: AgentKey, spec: KeySpec) -> bool:
    if spec.type == "rsa":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == spec.bits
    if spec.type == "ed25519":
        return isinstance(key, ed25519.Ed25519PrivateKey)
    names = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
    return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == names[spec.curve]
