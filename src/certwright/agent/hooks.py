"""Hooks (pre, post, config test, deploy) and the endpoint check after deploy."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping

from cryptography import x509

from certwright.agent.spec import Command, Endpoint
from certwright.errors import CertwrightError, ErrorKind

OUTPUT_TAIL = 400  # characters of a failed hook's output kept in the error


def run_hook(what: str, cmd: Command, env: Mapping[str, str]) -> None:
    """Run ``cmd`` with ``env`` added to the agent's environment; raise CertwrightError
    (rule ``hooks.<what>``) on a non-zero exit or when the time-out passes (the whole
    process group is killed then)."""
    full = {**os.environ, **env}
    full.pop("CERTWRIGHT_AGENT_CRASH_AT", None)
    try:
        proc = subprocess.Popen(list(cmd.run), env=full, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        raise CertwrightError(ErrorKind.CONFIG, f"{what} hook {cmd.run[0]}: {e.strerror}",
                              rule=f"hooks.{what}") from None
    try:
        out, _ = proc.communicate(timeout=cmd.timeout.total_seconds())
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CertwrightError(
            ErrorKind.CONFIG, f"{what} hook {cmd.run[0]} did not finish within "
            f"{cmd.timeout.total_seconds():g} s", rule=f"hooks.{what}") from None
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip()[-OUTPUT_TAIL:]
        raise CertwrightError(
            ErrorKind.CONFIG, f"{what} hook {cmd.run[0]} exited with {proc.returncode}"
            + (f": {tail}" if tail else ""), rule=f"hooks.{what}")


def served_certificate(ep: Endpoint) -> x509.Certificate:
    """The leaf ``ep`` serves to a client that sends ``ep.sni`` (no verification: we only
    compare what is served with what we installed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    timeout = ep.timeout.total_seconds()
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=ep.sni or None) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raise CertwrightError(ErrorKind.CONFIG, f"endpoint {ep.host}:{ep.port}: {e}",
                              rule="endpoints") from None
    if not der:
        raise CertwrightError(ErrorKind.CONFIG, f"endpoint {ep.host}:{ep.port} sent no "
                              "certificate", rule="endpoints")
    return x509.load_der_x509_certificate(der)


SETTLE_POLL = 0.2  # seconds between two looks while a reload settles


def check_endpoint(ep: Endpoint, serial: int, *, what: str = "the new",
                   sleep: Callable[[float], None] = time.sleep,
                   monotonic: Callable[[], float] = time.monotonic) -> None:
    """Raise unless ``ep`` serves the certificate with ``serial`` within ``ep.settle``
    (looking again every SETTLE_POLL seconds: the reload may not have taken effect yet)."""
    deadline = monotonic() + ep.settle.total_seconds()
    while True:
        try:
            served: x509.Certificate | None = served_certificate(ep)
            error: CertwrightError | None = None
        except CertwrightError as e:
            served, error = None, e
        if served is not None and served.serial_number == serial:
            return
        if monotonic() + SETTLE_POLL > deadline:
            break
        sleep(SETTLE_POLL)
    if error is not None:
        raise error
    assert served is not None
    raise CertwrightError(
        ErrorKind.CONFIG,
        f"endpoint {ep.host}:{ep.port}{f' (SNI {ep.sni})' if ep.sni else ''} serves "
        f"serial {served.serial_number:x}, not {what} {serial:x} "
        f"(after {ep.settle.total_seconds():g} s)", rule="endpoints")
