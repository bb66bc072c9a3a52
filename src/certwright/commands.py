"""The operator's commands on a CA's data directory: init, serve, db, issue, requests,
certs, crl, acme, audit. ``certwright.cli`` loads this module only when one of them
runs, so the agent's commands never import the server side."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright import registry
from certwright.ca import datadir
from certwright.ca.policy import EnrollmentRequest, Requester
from certwright.ca.review import Review
from certwright.ca.revocation import Reason
from certwright.ca.service import Held
from certwright.cli import EXIT_PENDING, fail
from certwright.clioptions import DATA, table
from certwright.configbase import parse_duration
from certwright.errors import CertwrightError, ErrorKind
from certwright.pki import csr as csrlib
from certwright.pki.keys import CA_KEY_TYPES, write_public_file
from certwright.store.repo import parse_serial

# -- init and serve -----------------------------------------------------------------------


@click.command()
@DATA
@click.option("--key-type", type=click.Choice(CA_KEY_TYPES), default="ec-p384",
              show_default=True, help="Key type of the root and issuing CA.")
@click.option("--org", default="certwright", show_default=True,
              help="Organization name in the CA certificates.")
@click.option("--hostname", "hostnames", multiple=True,
              help="Name for the HTTPS listener's certificate (repeatable; default localhost).")
@click.option("--http", default="127.0.0.1:8080", show_default=True,
              help="Plain HTTP listener (CRL, OCSP) HOST:PORT.")
@click.option("--https", default="127.0.0.1:8443", show_default=True,
              help="HTTPS listener (enrollment protocols) HOST:PORT.")
@click.option("--store-url", default="sqlite:///certwright.db", show_default=True,
              help="Database URL: SQLite relative to DATA, or postgresql://user@host/db.")
def init(data: Path, key_type: str, org: str, hostnames: tuple[str, ...], http: str,
         https: str, store_url: str) -> None:
    """Create a root CA, an issuing CA, the configuration and the store in DATA."""
    layout = datadir.init(data, key_type=key_type, organization=org,
                          hostnames=list(hostnames) or None, http=http, https=https,
                          store_url=store_url)
    click.echo(f"initialized a CA in {data}")
    click.echo(f"  configuration: {layout.config}")
    click.echo(f"  trust anchor:  {layout.root_pem}")
    click.echo(f"  chain:         {layout.chain_pem}")


@click.command()
@DATA
@click.option("--http", default=None, help="Plain HTTP listener HOST:PORT (default: config).")
@click.option("--https", default=None, help="HTTPS listener HOST:PORT (default: config).")
@click.option("--init", "init_missing", is_flag=True,
              help="Initialize a CA with the defaults first if DATA holds none.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes sharing the listeners (default: config server.workers).")
def serve(data: Path, http: str | None, https: str | None, init_missing: bool,
          workers: int | None) -> None:
    """Run the server: HTTPS for enrollment, plain HTTP for CRL, OCSP and health."""
    from certwright.server.run import run

    if init_missing and not datadir.Layout(data).initialized():
        datadir.init(data)
        click.echo(f"initialized a new CA in {data}")
    run(data, http=http, https=https, workers=workers)


@click.group()
def db() -> None:
    """The store's schema."""


@db.command("upgrade")
@DATA
def db_upgrade(data: Path) -> None:
    """Apply pending schema migrations."""
    _, config, _ = datadir.load(data)
    from certwright.store.repo import Store

    store = Store.open(config.store.url, data)
    try:
        store.migrate()
    finally:
        store.close()
    click.echo("schema is current")


# -- issuance -----------------------------------------------------------------------------


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _write_output(out: str | None, data: bytes) -> None:
    if out is None or out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        write_public_file(Path(out), data)


@click.command()
@DATA
@click.option("--profile", default=None, help="Profile to apply (default: default_profile).")
@click.option("--csr", "csr_path", required=True, help="PKCS#10 request file (PEM or DER), - for stdin.")
@click.option("--out", default=None, help="Write the certificate and chain here (default: stdout).")
@click.option("--validity", default=None, help="Requested lifetime, e.g. 30d (default: the profile's).")
@click.option("--operator", default=lambda: os.environ.get("USER", "operator"),
              show_default="$USER", help="Who is issuing, for the audit log.")
def issue(data: Path, profile: str | None, csr_path: str, out: str | None,
          validity: str | None, operator: str) -> None:
    """Issue a certificate locally from a CSR; the profile's policy applies as for any protocol."""
    raw = _read_input(csr_path)
    csr = csrlib.load(raw)
    with datadir.opened(data) as ca:
        now = ca.clock.now()
        not_after = None
        if validity is not None:
            try:
                not_after = now + parse_duration(validity)
            except ValueError as e:
                raise CertwrightError(ErrorKind.MALFORMED, f"--validity: {e}") from None
        request = EnrollmentRequest(
            profile=profile or ca.config.default_profile, csr=csr,
            requester=Requester("cli", operator), protocol=registry.LOCAL, not_after=not_after,
        )
        outcome = ca.enroll(request)
    if isinstance(outcome, Held):
        click.echo(f"request {outcome.request_id} is pending: {outcome.reason}", err=True)
        click.echo(f"approve it with: certwright requests approve {outcome.request_id} "
                   f"--data {data}", err=True)
        sys.exit(EXIT_PENDING)
    _write_output(out, outcome.fullchain_pem())
    click.echo(f"issued serial {outcome.record.serial}", err=True)


# -- requests -----------------------------------------------------------------------------


def _ts(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


@click.group()
def requests() -> None:
    """Requests held for an operator's approval."""


def _waited(d: dt.timedelta) -> str:
    """``3d 4h``, ``2h 5m``, ``42s``: the two largest units."""
    seconds = int(d.total_seconds())
    parts = [(seconds // 86400, "d"), (seconds // 3600 % 24, "h"), (seconds // 60 % 60, "m"),
             (seconds % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2])


def _review_json(r: Review) -> dict[str, Any]:
    rec = r.request
    return {
        "id": rec.id, "state": rec.state, "profile": rec.profile, "protocol": rec.protocol,
        "requester": rec.requester, "subject": r.subject, "names": list(r.names),
        "key_type": r.key.algorithm.value if r.key else None,
        "key_bits": r.key.bits if r.key else None,
        "key_curve": r.key.curve if r.key else None,
        "created_at": _ts(rec.created_at), "waited_seconds": int(r.waited.total_seconds()),
        "reason": rec.reason, "decided_by": rec.decided_by,
        "decided_at": _ts(rec.decided_at) if rec.decided_at else None, "serial": rec.serial,
        "would_issue": r.would_issue,
        "checks": [{"rule": c.rule, "held": c.held, "detail": c.detail} for c in r.checks],
    }


@requests.command("list")
@DATA
@click.option("--state", type=click.Choice(["pending", "issued", "rejected", "all"]),
              default="pending", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def requests_list(data: Path, state: str, as_json: bool) -> None:
    """List requests (pending ones by default) with the names they ask for."""
    with datadir.opened(data) as ca:
        reviews = ca.reviews(None if state == "all" else state)
    if as_json:
        for r in reviews:
            click.echo(json.dumps(_review_json(r)))
        return
    table([[r.request.id, r.request.state, r.request.profile, r.request.protocol,
            r.request.requester, ",".join(r.names), _ts(r.request.created_at),
            _waited(r.waited)] for r in reviews],
          ["ID", "STATE", "PROFILE", "PROTOCOL", "REQUESTER", "NAMES", "CREATED", "WAITED"])


@requests.command("show")
@DATA
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def requests_show(data: Path, request_id: str, as_json: bool) -> None:
    """Show what an approver decides on: requester, names, key, wait, and the profile's
    rules run again on the request (nothing is issued)."""
    with datadir.opened(data) as ca:
        r = ca.review(request_id)
    if as_json:
        click.echo(json.dumps(_review_json(r)))
        return
    rec = r.request
    fields = [
        ("id", rec.id), ("state", rec.state), ("requester", rec.requester),
        ("profile", rec.profile), ("protocol", rec.protocol), ("subject", r.subject),
        ("names", ", ".join(r.names)),
        ("key", f"{r.key} ({r.key.bits} bits)" if r.key else ""),
        ("created", _ts(rec.created_at)), ("waited", _waited(r.waited)),
        ("reason", rec.reason or ""), ("decided by", rec.decided_by or ""),
        ("decided", _ts(rec.decided_at) if rec.decided_at else ""), ("serial", rec.serial or ""),
    ]
    for label, value in fields:
        if value:  # a field with no value prints nothing, never "None"
            click.echo(f"{label + ':':12} {value}")
    click.echo("checks:")
    for c in r.checks:
        click.echo(f"  {'held' if c.held else 'FAILS':6}{c.rule}: {c.detail}")
    click.echo("approving now would issue" if r.would_issue
               else "approving now would be refused")


@requests.command("approve")
@DATA
@click.argument("request_id")
@click.option("--operator", default=lambda: os.environ.get("USER", "operator"),
              show_default="$USER")
def requests_approve(data: Path, request_id: str, operator: str) -> None:
    """Approve a pending request: the profile is applied again, then it is issued."""
    with datadir.opened(data) as ca:
        issued = ca.approve(request_id, operator)
    click.echo(f"approved {request_id}: issued serial {issued.record.serial}")


@requests.command("reject")
@DATA
@click.argument("request_id")
@click.option("--reason", default="rejected by an operator", show_default=True)
@click.option("--operator", default=lambda: os.environ.get("USER", "operator"),
              show_default="$USER")
def requests_reject(data: Path, request_id: str, reason: str, operator: str) -> None:
    """Reject a pending request."""
    with datadir.opened(data) as ca:
        ca.reject(request_id, operator, reason)
    click.echo(f"rejected {request_id}")


# -- certificates -------------------------------------------------------------------------


@click.group()
def certs() -> None:
    """Issued certificates."""


@certs.command("list")
@DATA
@click.option("--profile", default=None)
@click.option("--revoked/--valid", "revoked", default=None, help="Only revoked / not revoked.")
@click.option("--limit", default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def certs_list(data: Path, profile: str | None, revoked: bool | None, limit: int,
               as_json: bool) -> None:
    """List issued certificates, newest first."""
    with datadir.opened(data) as ca:
        recs = ca.certificates(profile=profile, revoked=revoked, limit=limit)
    if as_json:
        for r in recs:
            click.echo(json.dumps(_cert_json(r)))
        return
    table([[r.serial, r.profile, ",".join(r.names), _ts(r.not_after),
             "revoked" if r.revoked else "valid"] for r in recs],
           ["SERIAL", "PROFILE", "NAMES", "NOT AFTER", "STATUS"])


def _cert_json(r: Any) -> dict[str, Any]:
    return {"serial": r.serial, "issuer": r.issuer, "profile": r.profile, "subject": r.subject,
            "names": list(r.names), "not_before": _ts(r.not_before),
            "not_after": _ts(r.not_after), "fingerprint_sha256": r.fingerprint,
            "requester": r.requester, "protocol": r.protocol, "issued_at": _ts(r.issued_at),
            "revoked_at": _ts(r.revoked_at) if r.revoked_at else None,
            "revocation_reason": r.revocation_reason}


@certs.command("show")
@DATA
@click.argument("serial")
@click.option("--pem", is_flag=True, help="Print the certificate in PEM.")
def certs_show(data: Path, serial: str, pem: bool) -> None:
    """Show one certificate."""
    with datadir.opened(data) as ca:
        rec = ca.certificate(parse_serial(serial))
    if pem:
        cert = x509.load_der_x509_certificate(rec.der)
        sys.stdout.buffer.write(cert.public_bytes(serialization.Encoding.PEM))
        return
    for k, v in _cert_json(rec).items():
        click.echo(f"{k + ':':20} {', '.join(v) if isinstance(v, list) else v}")


@certs.command("revoke")
@DATA
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True,
              help="RFC 5280 reason: " + ", ".join(r.value for r in Reason))
@click.option("--operator", default=lambda: os.environ.get("USER", "operator"),
              show_default="$USER")
def certs_revoke(data: Path, serial: str, reason: str, operator: str) -> None:
    """Revoke a certificate and publish a new CRL."""
    r = Reason.parse(reason)
    with datadir.opened(data) as ca:
        rec = ca.revoke(parse_serial(serial), r, operator)
    click.echo(f"revoked {rec.serial} ({r.value})")


@click.command()
@DATA
@click.option("--out", default=None, help="Write here instead of stdout.")
@click.option("--pem", is_flag=True, help="PEM instead of DER.")
def crl(data: Path, out: str | None, pem: bool) -> None:
    """Print the issuing CA's current CRL (regenerated if it nears its nextUpdate)."""
    with datadir.opened(data) as ca:
        stored = ca.crl.current()
    der = stored.der
    if pem:
        obj = x509.load_der_x509_crl(der)
        der = obj.public_bytes(serialization.Encoding.PEM)
    _write_output(out, der)


# -- ACME -----------------------------------------------------------------------------------


# -- audit --------------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@DATA
def audit_verify(data: Path) -> None:
    """Check every link of the hash chain; report the first broken one."""
    with datadir.opened(data) as ca:
        count, broken = ca.verify_audit()
    if broken is not None:
        fail(f"{broken} ({count} records verified before it)")
    click.echo(f"audit log intact: {count} records")


@audit.command("export")
@DATA
def audit_export(data: Path) -> None:
    """Print every audit record as a JSON line, oldest first."""
    with datadir.opened(data) as ca:
        for rec in ca.audit_records():
            click.echo(json.dumps(rec.as_json(), sort_keys=True))
