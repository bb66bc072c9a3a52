"""Running the server: both listeners in one process, one event loop."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import uvicorn

from certwright.ca import datadir
from certwright.errors import config_error
from certwright.server import listener_cert
from certwright.server.app import build_http_app, build_https_app


def split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise config_error(f"{what} {value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(data: Path, *, http: str | None = None, https: str | None = None) -> None:
    ca = datadir.open_ca(data, migrate=True)
    settings = ca.config.server
    http_host, http_port = split_hostport(http or settings.http_listen, "--http")
    https_host, https_port = split_hostport(https or settings.https_listen, "--https")
    cert_path, key_path = listener_cert.ensure(ca, datadir.Layout(data).tls_dir)
    ca.crl.current()  # publish a CRL before the first client asks

    servers = [
        uvicorn.Server(uvicorn.Config(build_http_app(ca), host=http_host, port=http_port,
                                      log_level="warning", access_log=False, lifespan="off")),
        uvicorn.Server(uvicorn.Config(build_https_app(ca), host=https_host, port=https_port,
                                      ssl_certfile=str(cert_path), ssl_keyfile=str(key_path),
                                      log_level="warning", access_log=False, lifespan="off")),
    ]
    layout = datadir.Layout(data)
    print(f"certwright serving CA {ca.authority.issuer_id}", flush=True)
    print(f"  enrollment (HTTPS): https://{https_host}:{https_port}/  "
          f"(as {settings.https_url})", flush=True)
    print(f"  CRL, OCSP (HTTP):   http://{http_host}:{http_port}/  (as {settings.http_url})",
          flush=True)
    print(f"  trust anchor:       {layout.root_pem.resolve()}", flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            for s in servers:
                s.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        tasks = [asyncio.create_task(s._serve()) for s in servers]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    try:
        asyncio.run(main())
    finally:
        ca.store.close()
    if any(not s.started for s in servers):
        sys.exit(1)
