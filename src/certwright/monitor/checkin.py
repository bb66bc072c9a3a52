"""Agent check-ins: the JSON an agent POSTs to ``/monitor/v1/checkin`` and its endpoint,
a front-end like every enrollment protocol's: it parses, authenticates, makes one
storage call and renders the answer (the evaluation engine is not part of it).

The agent authenticates with ``Authorization: Bearer TOKEN``, the token that
``certwright monitor token add HOST`` printed once for its host. Parsing is declarative
and tolerant of fields a newer agent adds (they are ignored); the fields below are
checked, and names are brought to the store's ``type:value`` form. Every error is one
JSON document ``{"error": DETAIL}`` with the status ``render_error`` gives it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, Protocol

import anyio.to_thread
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certwright.ca.profiles import Config
from certwright.clock import Clock
from certwright.errors import CertwrightError, ErrorKind, meaning
from certwright.model.certificates import parse_serial
from certwright.model.monitor import AgentCheckIn, ReportedSpec
from certwright.monitor import config as monitorconfig
from certwright.monitor.storage import MonitorStorage, Repositories, storage_of
from certwright.monitor.tokens import InvalidToken, Tokens
from certwright.pki.names import canonical_names

__all__ = ["PATH", "Attempt", "CheckIn", "InstalledCertificate", "Renewal", "SpecReport",
           "accept", "checkin_routes", "parse_checkin", "render_error", "transport_error"]

PATH = "/monitor/v1/checkin"
MAX_SPECS = 1000


def _serial(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return parse_serial(v)
        except CertwrightError as e:
            raise ValueError(str(e)) from None
    return v


Names = Annotated[tuple[str, ...], BeforeValidator(canonical_names)]
Serial = Annotated[str, BeforeValidator(_serial)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InstalledCertificate(Wire):
    """The certificate the spec has installed now (its ``live`` version)."""

    serial: Serial
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime
    names: Names | None = None
    installed_at: AwareDatetime | None = None


class Attempt(Wire):
    """The last enrollment or renewal attempt of the spec."""

    at: AwareDatetime
    ok: bool
    error: str | None = Field(default=None, max_length=4000)


class Renewal(Wire):
    next_at: AwareDatetime | None = None
    rule: str | None = Field(default=None, max_length=200)


class SpecReport(Wire):
    """One spec the host holds: where it enrolls, the names it derives now, what is
    installed and how the last attempt went."""

    name: str = Field(min_length=1, max_length=200)
    issuer: str | None = Field(default=None, max_length=2000)
    protocol: str | None = Field(default=None, max_length=16)
    profile: str | None = Field(default=None, max_length=64)
    names: Names = Field(min_length=1)
    renewal: Renewal | None = None
    certificate: InstalledCertificate | None = None
    last_attempt: Attempt | None = None
    failing_since: AwareDatetime | None = None


class CheckIn(Wire):
    version: Literal[1] = 1
    host: str = Field(min_length=1, max_length=255)
    agent_version: str = Field(min_length=1, max_length=64)
    sent_at: AwareDatetime | None = None
    # The longest the agent will wait before its next check-in, in seconds.
    checkin_interval: int | None = Field(default=None, ge=1, le=7 * 86400)
    specs: tuple[SpecReport, ...] = Field(default=(), max_length=MAX_SPECS)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if any(c.isspace() or c in "/:" for c in v):
            raise ValueError(f"{v!r} is not a host name")
        return v.lower()

    @model_validator(mode="after")
    def _unique_specs(self) -> CheckIn:
        seen = [s.name for s in self.specs]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise ValueError(f"spec names reported twice: {', '.join(dup)}")
        return self


def parse_checkin(body: bytes) -> CheckIn:
    """Raise CertwrightError(MALFORMED) naming each bad field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CertwrightError(ErrorKind.MALFORMED, "the body is not JSON") from None
    try:
        return CheckIn.model_validate(data)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
                          f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise CertwrightError(ErrorKind.MALFORMED, where) from None


def as_domain(report: CheckIn) -> AgentCheckIn:
    """The check-in in the store's terms: a failed last attempt becomes the spec's
    error, failing since the agent says (or since that attempt)."""
    specs = []
    for s in report.specs:
        cert = s.certificate
        attempt = s.last_attempt
        failed = attempt is not None and not attempt.ok
        specs.append(ReportedSpec(
            name=s.name, names=s.names, profile=s.profile, issuer=s.issuer,
            serial=cert.serial if cert else None,
            cert_names=cert.names if cert and cert.names else None,
            not_before=cert.not_before if cert else None,
            not_after=cert.not_after if cert else None,
            last_attempt_at=attempt.at if attempt else None,
            last_error=(attempt.error or "failed") if failed and attempt else None,
            failing_since=(s.failing_since or (attempt.at if attempt else None))
            if failed else None,
            next_renewal_at=s.renewal.next_at if s.renewal else None))
    return AgentCheckIn(host=report.host, agent_version=report.agent_version,
                        interval_seconds=report.checkin_interval, specs=tuple(specs))


def accept(storage: MonitorStorage, report: CheckIn, token: str) -> None:
    """Authenticate ``token`` for the report's host, then replace the host's reported
    specs with the report's."""
    Tokens(storage).authenticate(report.host, token)
    storage.record_checkin(as_domain(report))


# -- rendering: one place turns every failure into the check-in API's answer -----------

REALM = "certwright-monitor"
MEDIA_TYPE = "application/json"


def transport_error(status: int, detail: str, headers: dict[str, str] | None = None,
                    ) -> Response:
    """A failure before the check-in is read (wrong method, media type, oversized body),
    in the API's one error shape. It is also the renderer the server's own body limit
    should use for this path (the front-end registry's transport-error hook)."""
    return JSONResponse({"error": detail}, status, headers=headers)


def render_error(error: CertwrightError) -> Response:
    """A CertwrightError as the API's answer: the status ``errors.meaning`` gives the
    kind, refined by RFC 6750 3.1 for bearer tokens (401 with a challenge when the
    requester is not authenticated; 403, a refusal, for a good token of another host).
    Internal errors say nothing of their cause."""
    if isinstance(error, InvalidToken):
        return transport_error(401, error.detail, {
            "WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'})
    m = meaning(error.kind)
    if m.internal:
        return transport_error(m.status, "internal error")
    return transport_error(m.status, error.detail)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _media_type_error(request: Request) -> Response | None:
    """415 unless the body is declared JSON. A body with no Content-Type at all is read
    as JSON (the agent always declares it; a tool that forgets gets the parse error)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return None
    kind = declared.partition(";")[0].strip().lower()
    if kind == MEDIA_TYPE or (kind.startswith("application/") and kind.endswith("+json")):
        return None
    return transport_error(415, f"the body must be {MEDIA_TYPE}, not {kind or 'empty'}",
                           {"Accept-Post": MEDIA_TYPE})


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` bytes (declared or streamed)."""
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise CertwrightError(ErrorKind.MALFORMED, "bad Content-Length") from None
    if declared > limit:
        return None
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class CheckinCore(Repositories, Protocol):
    """What the check-in API asks of the CertificateAuthority."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...


def checkin_routes(ca: CheckinCore) -> list[Route]:
    """``POST /monitor/v1/checkin`` for ``build_https_app(mounts=...)``."""
    storage = storage_of(ca)
    interval = int(monitorconfig.settings(ca.config).agents.interval.total_seconds())
    limit = ca.config.server.max_body_bytes

    async def checkin(request: Request) -> Response:
        if request.method != "POST":
            return transport_error(405, f"{request.method} is not allowed here; POST a "
                                   "check-in", {"Allow": "POST"})
        token = _bearer(request)
        if token is None:
            # RFC 6750 3.1: no error code when the request carried no credentials at all.
            return transport_error(401, "a bearer token is required",
                                   {"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        refused = _media_type_error(request)
        if refused is not None:
            return refused
        try:
            body = await _read_body(request, limit)
            if body is None:
                return transport_error(413, f"request body larger than {limit} bytes")
            report = parse_checkin(body)
            await anyio.to_thread.run_sync(accept, storage, report, token)
        except CertwrightError as e:
            return render_error(e)
        return JSONResponse({"status": "ok", "specs": len(report.specs),
                             "checkin_interval": report.checkin_interval or interval,
                             "received_at": ca.clock.now().astimezone(dt.UTC).strftime(
                                 "%Y-%m-%dT%H:%M:%SZ")})

    # Every method reaches the handler, so a wrong one gets the API's JSON 405 rather
    # than the router's plain-text one (a function endpoint with no list takes GET only).
    return [Route(PATH, checkin, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                          "OPTIONS"])]
