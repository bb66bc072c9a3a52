"""Running the server: both listeners in one process, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import uvicorn
from cryptography import x509

from certwright import registry
from certwright.ca import builtin, datadir
from certwright.ca.frontend import FrontEnd
from certwright.ca.service import CertificateAuthority
from certwright.errors import CertwrightError, ErrorKind, config_error
from certwright.pki.names import Names
from certwright.server import listener_cert, tls
from certwright.server.app import build_http_app, build_https_app

log = logging.getLogger("certwright.server")

# Seconds open connections get to finish after SIGTERM/SIGINT before they are cut.
GRACEFUL_SHUTDOWN = 5


def split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise config_error(f"{what} {value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def listen(host: str, port: int, what: str) -> list[socket.socket]:
    """Bind and listen on every address ``host`` resolves to, before anything is served.

    Binding here rather than inside uvicorn turns "address already in use" into one
    CertwrightError (uvicorn logs it and raises SystemExit from inside the event loop,
    which ends in a traceback), and the port accepts connections from the moment the
    server says it is serving.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise config_error(f"{what} {host}:{port}: cannot resolve {host!r}: {e.strerror}"
                           ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, socktype, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
                sock.listen(2048)
            except OSError as e:
                # In use: most likely another server (or another certwright) runs there.
                kind = ErrorKind.CONFLICT if e.errno == errno.EADDRINUSE else ErrorKind.CONFIG
                raise CertwrightError(
                    kind, f"{what}: cannot listen on {host}:{port}: {e.strerror or e}",
                ) from None
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


UPKEEP_INTERVAL = 600.0  # seconds


async def _upkeep(ca: CertificateAuthority, data: Path, tls: ssl.SSLContext | None, *,
                  renew: bool = True) -> None:
    """Keep the published CRL ahead of its nextUpdate even when nobody fetches it, and
    the HTTPS listener's certificate renewed (new handshakes pick the new one up).
    Extra worker processes (``renew=False``) only reload the certificate the first
    process renews."""
    while True:
        await asyncio.sleep(UPKEEP_INTERVAL)
        try:
            tls_dir = datadir.Layout(data).tls_dir
            if renew:
                await asyncio.to_thread(ca.crl.current)
                cert, key = await asyncio.to_thread(listener_cert.ensure, ca, tls_dir)
            else:
                cert, key = listener_cert.paths(tls_dir)
            if tls is not None:
                tls.load_cert_chain(str(cert), str(key))
        except Exception:
            log.exception("upkeep failed; retrying in %s s", UPKEEP_INTERVAL)


def _fork_workers(count: int, ca: CertificateAuthority) -> tuple[list[int], bool]:
    """Fork ``count`` more server processes on the listening sockets bound so far (the
    kernel spreads connections over every process accepting on them). Returns the
    children's pids and whether this is a child. Forking happens before any event loop
    or thread exists; a child drops the parent's pooled database connections."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            ca.after_fork()
            return [], True
        children.append(pid)
    return children, False


async def _watch(children: list[int], lost: list[int], stop: Callable[[], None]) -> None:
    """A worker that dies is a server that is broken: say so and stop them all, so the
    supervisor (systemd, a container runtime) restarts the whole server."""
    while children:
        await asyncio.sleep(0.5)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.remove(pid)
                lost.append(pid)
                log.error("worker process %d exited (%s); stopping the server", pid,
                          f"signal {-os.waitstatus_to_exitcode(status)}"
                          if os.WIFSIGNALED(status)
                          else f"code {os.waitstatus_to_exitcode(status)}")
                stop()
                return


def _client_anchors(ca: CertificateAuthority,
                    frontends: tuple[FrontEnd, ...]) -> list[x509.Certificate]:
    """Our own root and issuing CA (clients renewing with a certificate we issued), and
    whatever each front-end trusts besides."""
    found = [ca.root, *ca.chain]
    for frontend in frontends:
        if frontend.trust_anchors is not None:
            found += [c for c in frontend.trust_anchors(ca) if c not in found]
    return found


def _names(names: Names, host: str) -> bool:
    """The listener's certificate is valid for ``host`` (a name or a literal address)."""
    try:
        return ipaddress.ip_address(host) in names.ip
    except ValueError:
        return host.lower().rstrip(".") in {d.lower() for d in names.dns}


def _covered_url(names: Names, host: str, port: int) -> str:
    """The listener's URL as ``serve`` prints it: with the address it binds when its
    certificate names that address, else with a name the certificate carries (a
    wildcard address answers on every local address, so on the names' too)."""
    if not _names(names, host):
        if not names.dns and not names.ip:
            return f"{host}:{port} (the listener's certificate names no host)"
        host = names.dns[0] if names.dns else str(names.ip[0])
    return f"https://[{host}]:{port}/" if ":" in host else f"https://{host}:{port}/"


def run(data: Path, *, http: str | None = None, https: str | None = None,
        workers: int | None = None) -> None:
    ca = datadir.open_ca(data, migrate=True)
    reserved = ca.config.reserved_warning()
    if reserved is not None:
        print(f"certwright: warning: {reserved}", file=sys.stderr, flush=True)
    listeners: list[socket.socket] = []
    children: list[int] = []
    lost: list[int] = []  # workers that died on their own
    is_child = False
    failed = False
    try:
        settings = ca.config.server
        http_host, http_port = split_hostport(http or settings.http_listen, "--http")
        https_host, https_port = split_hostport(https or settings.https_listen, "--https")
        if https is not None and https != settings.https_listen:
            # The address given here is the one the listener binds, and so the one its
            # certificate must name (ca/builtin.listener_hostnames).
            settings = settings.model_copy(update={"https_listen": https})
            ca.config = ca.config.model_copy(update={"server": settings})
        cert_path, key_path = listener_cert.ensure(ca, datadir.Layout(data).tls_dir)
        ca.crl.current()  # publish a CRL before the first client asks

        frontends = registry.frontends()
        configs = [
            uvicorn.Config(build_http_app(ca, frontends), host=http_host, port=http_port,
                           log_level="warning", access_log=False, lifespan="off",
                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN),
            uvicorn.Config(build_https_app(ca, frontends),
                           host=https_host, port=https_port,
                           ssl_certfile=str(cert_path), ssl_keyfile=str(key_path),
                           # every request's scope carries the TLS client certificate
                           http=tls.TlsHttpToolsProtocol,
                           log_level="warning", access_log=False, lifespan="off",
                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN),
        ]
        for c in configs:
            c.load()  # a bad TLS key or certificate fails here, before anything listens
        # Mutual TLS, optional: clients may present a certificate (server/tls.py).
        assert configs[1].ssl is not None
        tls.request_client_certificates(configs[1].ssl, _client_anchors(ca, frontends))
        http_socks = listen(http_host, http_port, "--http")
        listeners += http_socks
        https_socks = listen(https_host, https_port, "--https")
        listeners += https_socks
        servers = [uvicorn.Server(c) for c in configs]
        count = workers if workers is not None else settings.workers
        if count < 1:
            raise config_error(f"--workers {count}: at least 1")

        layout = datadir.Layout(data)
        print(f"certwright serving CA {ca.issuer_id}", flush=True)
        names = builtin.listener_names(builtin.listener_hostnames(settings))
        public = urllib.parse.urlsplit(settings.https_url).hostname or ""
        print(f"  enrollment (HTTPS): {_covered_url(names, https_host, https_port)}  "
              + (f"(as {settings.https_url})" if _names(names, public) else
                 f"(server.https_url's host {public!r} is not in the listener's "
                 "certificate: add it to server.hostnames)"), flush=True)
        print(f"  CRL, OCSP (HTTP):   http://{http_host}:{http_port}/  "
              f"(as {settings.http_url})", flush=True)
        print(f"  trust anchor:       {layout.root_pem.resolve()}", flush=True)
        if count > 1:
            print(f"  worker processes:   {count}", flush=True)
        children, is_child = _fork_workers(count - 1, ca)

        signalled: set[int] = set()

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def stop() -> None:
                for s in servers:
                    # A second signal cuts open connections instead of waiting.
                    if s.should_exit:
                        s.force_exit = True
                    s.should_exit = True
                for pid in children:
                    if pid not in signalled:  # each worker is told once
                        signalled.add(pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGTERM)

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
            upkeep = asyncio.create_task(_upkeep(ca, data, configs[1].ssl,
                                                 renew=not is_child))
            watcher = asyncio.create_task(_watch(children, lost, stop))
            # Background work (the monitor's evaluation) in the first process only: one
            # alerter, however many workers.
            background: list[asyncio.Task[None]] = [] if is_child else [
                asyncio.create_task(f.background(ca, data))
                for f in frontends if f.background is not None]
            tasks = [asyncio.create_task(servers[0]._serve(http_socks)),
                     asyncio.create_task(servers[1]._serve(https_socks))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            upkeep.cancel()
            watcher.cancel()
            for task in background:
                task.cancel()
            for t in done:
                error = t.exception()
                if error is not None:
                    raise error

        try:
            asyncio.run(main())
        except BaseException:
            failed = True
            if not is_child:
                raise
            log.exception("worker process %d failed", os.getpid())
    finally:
        for s in listeners:
            s.close()
        ca.close()
        if is_child:
            # A worker ends here: never back into the command line code of its parent.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1 if failed or any(not s.started for s in servers) else 0)
        failed = _reap(children) or failed or bool(lost)
    if failed or any(not s.started for s in servers):
        sys.exit(1)


def _reap(children: list[int]) -> bool:
    """Wait for the workers to finish (they got SIGTERM); True if one failed."""
    failed = False
    deadline = time.monotonic() + GRACEFUL_SHUTDOWN + 5
    for pid in children:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                failed = failed or os.waitstatus_to_exitcode(status) != 0
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                failed = True
                break
            time.sleep(0.05)
    return failed
