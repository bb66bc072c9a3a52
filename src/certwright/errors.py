"""One internal error type; each protocol front-end renders it in its own wire format.

Boulder keeps a single internal error (``errors/errors.go``) and turns it into ACME
problem documents only at the edge; we do the same for ACME, EST, SCEP, CMP and the CLI.
The ``detail`` is written for the requester: it must never carry internal state.
"""

from __future__ import annotations

import dataclasses
import enum


class ErrorKind(enum.Enum):
    MALFORMED = "malformed"  # not parseable: bad PEM/DER/base64/JSON
    BAD_CSR = "bad-csr"  # parseable but unusable: no proof of possession, bad version
    BAD_PUBLIC_KEY = "bad-public-key"  # weak or unsupported key
    REJECTED_IDENTIFIER = "rejected-identifier"  # a name the profile does not allow
    POLICY = "policy"  # any other profile rule (validity, requester...)
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"  # state does not allow the operation (already revoked, ...)
    CONFIG = "config"  # the operator's configuration is wrong
    INTERNAL = "internal"


class CertwrightError(Exception):
    """A failure a caller can act on.

    ``rule`` names the profile rule that rejected a request (``names.dns``,
    ``key.rsa_min_bits``...) so an operator can find it in the configuration.
    """

    def __init__(self, kind: ErrorKind, detail: str, *, rule: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.rule = rule

    def __str__(self) -> str:
        if self.rule:
            return f"{self.detail} (rule {self.rule})"
        return self.detail


def malformed(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.MALFORMED, detail)


def not_found(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.NOT_FOUND, detail)


def config_error(detail: str) -> CertwrightError:
    return CertwrightError(ErrorKind.CONFIG, detail)


@dataclasses.dataclass(frozen=True)
class Meaning:
    """What an ErrorKind means to whoever asked, whatever the protocol.

    Each protocol's renderer (ACME problem documents, EST statuses, the check-in API,
    SCEP failInfo, CMP error messages, the CLI) starts from this one table and refines
    only where its own specification says so (RFC 8555 6.7 problem types, RFC 7030
    4.2.3 statuses...).
    """

    status: int  # the HTTP status for a protocol carried over HTTP
    refused: bool  # the requester asked for something it may not have (a policy answer)
    internal: bool  # the server's fault: the requester is told no detail

    @property
    def client_fault(self) -> bool:
        return not self.internal


MEANINGS: dict[ErrorKind, Meaning] = {
    ErrorKind.MALFORMED: Meaning(400, refused=False, internal=False),
    ErrorKind.BAD_CSR: Meaning(400, refused=False, internal=False),
    ErrorKind.BAD_PUBLIC_KEY: Meaning(403, refused=True, internal=False),
    ErrorKind.REJECTED_IDENTIFIER: Meaning(403, refused=True, internal=False),
    ErrorKind.POLICY: Meaning(403, refused=True, internal=False),
    ErrorKind.UNAUTHORIZED: Meaning(403, refused=True, internal=False),
    ErrorKind.NOT_FOUND: Meaning(404, refused=False, internal=False),
    ErrorKind.CONFLICT: Meaning(409, refused=False, internal=False),
    ErrorKind.CONFIG: Meaning(500, refused=False, internal=True),
    ErrorKind.INTERNAL: Meaning(500, refused=False, internal=True),
}


def meaning(kind: ErrorKind) -> Meaning:
    return MEANINGS[kind]
