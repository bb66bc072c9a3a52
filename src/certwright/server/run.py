"""Running the server: both listeners in one process, one event loop."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import ssl
import sys
from pathlib import Path

import uvicorn

from certwright.acme.app import acme_routes
from certwright.ca import datadir
from certwright.ca.service import CertificateAuthority
from certwright.errors import CertwrightError, ErrorKind, config_error
from certwright.server import listener_cert
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


async def _upkeep(ca: CertificateAuthority, data: Path, tls: ssl.SSLContext | None) -> None:
    """Keep the published CRL ahead of its nextUpdate even when nobody fetches it, and
    the HTTPS listener's certificate renewed (new handshakes pick the new one up)."""
    while True:
        await asyncio.sleep(UPKEEP_INTERVAL)
        try:
            await asyncio.to_thread(ca.crl.current)
            cert, key = await asyncio.to_thread(listener_cert.ensure, ca,
                                                datadir.Layout(data).tls_dir)
            if tls is not None:
                tls.load_cert_chain(str(cert), str(key))
        except Exception:
            log.exception("upkeep failed; retrying in %s s", UPKEEP_INTERVAL)


def run(data: Path, *, http: str | None = None, https: str | None = None) -> None:
    ca = datadir.open_ca(data, migrate=True)
    listeners: list[socket.socket] = []
    try:
        settings = ca.config.server
        http_host, http_port = split_hostport(http or settings.http_listen, "--http")
        https_host, https_port = split_hostport(https or settings.https_listen, "--https")
        cert_path, key_path = listener_cert.ensure(ca, datadir.Layout(data).tls_dir)
        ca.crl.current()  # publish a CRL before the first client asks

        configs = [
            uvicorn.Config(build_http_app(ca), host=http_host, port=http_port,
                           log_level="warning", access_log=False, lifespan="off",
                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN),
            uvicorn.Config(build_https_app(ca, mounts=acme_routes(ca)), host=https_host, port=https_port,
                           ssl_certfile=str(cert_path), ssl_keyfile=str(key_path),
                           log_level="warning", access_log=False, lifespan="off",
                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN),
        ]
        for c in configs:
            c.load()  # a bad TLS key or certificate fails here, before anything listens
        http_socks = listen(http_host, http_port, "--http")
        listeners += http_socks
        https_socks = listen(https_host, https_port, "--https")
        listeners += https_socks
        servers = [uvicorn.Server(c) for c in configs]

        layout = datadir.Layout(data)
        print(f"certwright serving CA {ca.authority.issuer_id}", flush=True)
        print(f"  enrollment (HTTPS): https://{https_host}:{https_port}/  "
              f"(as {settings.https_url})", flush=True)
        print(f"  CRL, OCSP (HTTP):   http://{http_host}:{http_port}/  "
              f"(as {settings.http_url})", flush=True)
        print(f"  trust anchor:       {layout.root_pem.resolve()}", flush=True)

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def stop() -> None:
                for s in servers:
                    # A second signal cuts open connections instead of waiting.
                    if s.should_exit:
                        s.force_exit = True
                    s.should_exit = True

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
            upkeep = asyncio.create_task(_upkeep(ca, data, configs[1].ssl))
            tasks = [asyncio.create_task(servers[0]._serve(http_socks)),
                     asyncio.create_task(servers[1]._serve(https_socks))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            upkeep.cancel()
            for t in done:
                error = t.exception()
                if error is not None:
                    raise error

        asyncio.run(main())
    finally:
        for s in listeners:
            s.close()
        ca.store.close()
    if any(not s.started for s in servers):
        sys.exit(1)
