"""Agent check-ins: the JSON an agent POSTs to ``/monitor/v1/checkin`` and its endpoint.

The agent authenticates with ``Authorization: Bearer TOKEN``, the token that
``certwright monitor token add HOST`` printed once for its host. Parsing is declarative
and tolerant of fields a newer agent adds (they are ignored); the fields below are
checked, and names are brought to the store's ``type:value`` form.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

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

from certwright.ca.service import CertificateAuthority
from certwright.errors import CertwrightError, ErrorKind
from certwright.monitor.state import MonitorState
from certwright.pki.names import canonical_names
from certwright.store.repo import parse_serial

__all__ = ["PATH", "Attempt", "CheckIn", "InstalledCertificate", "Renewal", "SpecReport",
           "checkin_routes"]

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


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _problem(status: int, detail: str, **headers: str) -> Response:
    return JSONResponse({"error": detail}, status, headers=headers or None)


def checkin_routes(ca: CertificateAuthority) -> list[Route]:
    """``POST /monitor/v1/checkin`` for ``build_https_app(mounts=...)``."""
    state = MonitorState(ca.store, ca.clock)
    interval = int(ca.config.monitor.agents.interval.total_seconds())

    async def checkin(request: Request) -> Response:
        token = _bearer(request)
        if token is None:
            return _problem(401, "a bearer token is required",
                            **{"WWW-Authenticate": 'Bearer realm="certwright-monitor"'})
        body = await request.body()
        try:
            report = parse_checkin(body)
            await anyio.to_thread.run_sync(state.record_checkin, report, token)
        except CertwrightError as e:
            if e.kind is ErrorKind.UNAUTHORIZED:
                return _problem(401, e.detail, **{
                    "WWW-Authenticate": 'Bearer realm="certwright-monitor", error="invalid_token"'})
            return _problem(400, e.detail)
        return JSONResponse({"status": "ok", "specs": len(report.specs),
                             "checkin_interval": report.checkin_interval or interval,
                             "received_at": ca.clock.now().astimezone(dt.UTC).strftime(
                                 "%Y-%m-%dT%H:%M:%SZ")})

    return [Route(PATH, checkin, methods=["POST"])]
