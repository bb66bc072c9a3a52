"""ACME problem documents (RFC 8555 section 6.7, RFC 7807).

Front-end code raises AcmeProblem; a CertwrightError from the core is rendered here,
once, at the edge. Internal details never reach the client: serverInternal carries a
fixed sentence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from certwright.errors import CertwrightError, ErrorKind

URN = "urn:ietf:params:acme:error:"


@dataclasses.dataclass
class Subproblem:
    type: str
    detail: str
    identifier: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"type": URN + self.type, "detail": self.detail, "identifier": self.identifier}


class AcmeProblem(Exception):
    def __init__(self, type: str, detail: str, status: int = 400, *,
                 subproblems: list[Subproblem] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.type = type
        self.detail = detail
        self.status = status
        self.subproblems = subproblems or []
        self.headers = headers or {}

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": URN + self.type, "detail": self.detail,
                               "status": self.status}
        if self.subproblems:
            doc["subproblems"] = [s.as_json() for s in self.subproblems]
        return doc


def malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, 400)


def unauthorized(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail, 403)


def not_found(detail: str = "no such resource") -> AcmeProblem:
    return AcmeProblem("malformed", detail, 404)


_KIND = {
    ErrorKind.MALFORMED: ("malformed", 400),
    ErrorKind.BAD_CSR: ("badCSR", 400),
    ErrorKind.BAD_PUBLIC_KEY: ("badPublicKey", 400),
    ErrorKind.REJECTED_IDENTIFIER: ("rejectedIdentifier", 400),
    ErrorKind.POLICY: ("rejectedIdentifier", 400),
    ErrorKind.UNAUTHORIZED: ("unauthorized", 403),
    ErrorKind.NOT_FOUND: ("malformed", 404),
    ErrorKind.CONFLICT: ("malformed", 409),
    ErrorKind.CONFIG: ("serverInternal", 500),
    ErrorKind.INTERNAL: ("serverInternal", 500),
}


def from_error(e: CertwrightError, *, csr_stage: bool = False) -> AcmeProblem:
    """The ACME rendering of a core error. At finalize, a policy failure is badCSR."""
    type_, status = _KIND[e.kind]
    if status == 500:
        return AcmeProblem("serverInternal", "the server could not process the request", 500)
    # RFC 8555 6.7: badCSR is "The CSR is unacceptable (e.g., due to a short key)";
    # badPublicKey is about the JWS key.
    if csr_stage and e.kind in (ErrorKind.POLICY, ErrorKind.MALFORMED,
                                ErrorKind.BAD_PUBLIC_KEY):
        type_ = "badCSR"
    return AcmeProblem(type_, str(e), status)
