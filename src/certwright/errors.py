"""One internal error type; each protocol front-end renders it in its own wire format.

Boulder keeps a single internal error (``errors/errors.go``) and turns it into ACME
problem documents only at the edge; we do the same for ACME, EST, SCEP, CMP and the CLI.
The ``detail`` is written for the requester: it must never carry internal state.
"""

from __future__ import annotations

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
