"""ACME problem documents (RFC 8555 section 6.7, RFC 7807).

Front-end code raises AcmeProblem; a CertwrightError from the core or the storage is
rendered here, once, at the edge (Boulder's ``web/probs.go``): its HTTP status from
``certwright.errors.meaning``, refined where ACME practice differs, and ACME's problem
type for its kind. Internal details never reach the client: serverInternal carries a
fixed sentence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from certwright.errors import CertwrightError, ErrorKind, meaning

URN = "urn:ietf:params:acme:error:"
INTERNAL_DETAIL = "the server could not process the request"


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


def server_internal(detail: str = INTERNAL_DETAIL) -> AcmeProblem:
    return AcmeProblem("serverInternal", detail, 500)


# RFC 8555 6.7 has no "not found" or "conflict" type: those are malformed, with the
# HTTP status saying which (Boulder does the same).
_TYPE = {
    ErrorKind.MALFORMED: "malformed",
    ErrorKind.BAD_CSR: "badCSR",
    ErrorKind.BAD_PUBLIC_KEY: "badPublicKey",
    ErrorKind.REJECTED_IDENTIFIER: "rejectedIdentifier",
    ErrorKind.POLICY: "rejectedIdentifier",
    ErrorKind.UNAUTHORIZED: "unauthorized",
    ErrorKind.NOT_FOUND: "malformed",
    ErrorKind.CONFLICT: "malformed",
}
# ACME answers a request the profile refuses with 400, not the 403 of other protocols:
# Boulder's rejectedIdentifier and badPublicKey problems are 400 Bad Request, and ACME
# clients expect them so.
_STATUS = {
    ErrorKind.BAD_PUBLIC_KEY: 400,
    ErrorKind.REJECTED_IDENTIFIER: 400,
    ErrorKind.POLICY: 400,
}
# RFC 8555 6.7: badCSR is "The CSR is unacceptable (e.g., due to a short key)";
# badPublicKey is about the JWS key. At finalize, every refusal of the CSR is badCSR.
_CSR_STAGE = frozenset({ErrorKind.POLICY, ErrorKind.MALFORMED, ErrorKind.BAD_PUBLIC_KEY})


def from_error(e: CertwrightError, *, csr_stage: bool = False) -> AcmeProblem:
    """The ACME rendering of a core error. At finalize, a policy failure is badCSR."""
    m = meaning(e.kind)
    if m.internal:
        return server_internal()
    type_ = "badCSR" if csr_stage and e.kind in _CSR_STAGE else _TYPE[e.kind]
    return AcmeProblem(type_, str(e), _STATUS.get(e.kind, m.status))
