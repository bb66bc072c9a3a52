"""Certificates this CA issued, requests it holds, CRLs it published: as domain objects."""

from __future__ import annotations

import dataclasses
import datetime as dt

from certwright.errors import CertwrightError, ErrorKind

__all__ = ["CertificateRecord", "RequestRecord", "StoredCrl", "format_serial", "parse_serial"]


@dataclasses.dataclass(frozen=True)
class CertificateRecord:
    serial: str
    issuer: str
    profile: str
    subject: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    der: bytes
    request_id: str | None
    requester: str
    protocol: str
    issued_at: dt.datetime
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    id: str
    profile: str
    protocol: str
    requester: str
    csr: bytes
    names: tuple[str, ...]
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    state: str  # pending | issued | rejected
    reason: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    serial: str | None


@dataclasses.dataclass(frozen=True)
class StoredCrl:
    issuer: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    der: bytes


def format_serial(serial: int) -> str:
    return format(serial, "x")


def parse_serial(text: str) -> str:
    """Accept ``0a1b...``, ``0A:1B:...`` or ``0x0a1b``; return the canonical form."""
    t = text.strip().lower().replace(":", "")
    t = t.removeprefix("0x")
    try:
        return format_serial(int(t, 16))
    except ValueError:
        raise CertwrightError(ErrorKind.MALFORMED, f"{text!r} is not a hexadecimal serial"
                              ) from None
