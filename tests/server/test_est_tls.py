"""The TLS facts the HTTPS listener puts into each request's scope (server/tls.py), seen
by an application that echoes them: uvicorn with our protocol class on a loopback port,
a real TLS client (Python's ssl) with and without a client certificate, TLS 1.2 and 1.3.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization

from certwright.ca.service import CertificateAuthority, Issued
from certwright.server import listener_cert, tls
from tests.helpers import csr, key, request


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering with the scope's extensions as JSON."""
    ext = scope.get("extensions") or {}
    ours = dict(ext.get("certwright.tls") or {})
    for k in ("client_cert_der", "tls_unique"):
        if ours.get(k) is not None:
            ours[k] = ours[k].hex()
    body = json.dumps({"tls": ext.get("tls"), "certwright.tls": ours}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def listening(ca: CertificateAuthority, directory: Path) -> Iterator[int]:
    cert, k = listener_cert.ensure(ca, directory / "tls")
    config = uvicorn.Config(echo, ssl_certfile=str(cert), ssl_keyfile=str(k),
                            http=tls.TlsHttpToolsProtocol, log_level="warning",
                            lifespan="off")
    config.load()
    assert config.ssl is not None
    tls.request_client_certificates(config.ssl, [ca.root, *ca.chain])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def get(port: int, context: ssl.SSLContext) -> tuple[dict[str, Any], bytes | None]:
    """(echoed extensions, the client's own tls-unique value or None)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as s:
        binding = s.get_channel_binding("tls-unique") if s.version() == "TLSv1.2" else None
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1]), binding


@pytest.fixture
def client_files(ca: CertificateAuthority, tmp_path: Path) -> tuple[Path, Path, str]:
    k = key()
    out = ca.enroll(request(csr(["me.internal"], private_key=k), profile="tls-client"))
    assert isinstance(out, Issued)
    pem = out.certificate.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "me.pem", tmp_path / "me.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return cert_path, key_path, pem.decode()


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_ok_scope_carries_client_certificate_and_version(
        ca: CertificateAuthority, tmp_path: Path, client_files: tuple[Path, Path, str],
        version: str) -> None:
    context = ssl.create_default_context(cadata=ca.root.public_bytes(
        serialization.Encoding.PEM).decode())
    context.minimum_version = context.maximum_version = (
        ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else ssl.TLSVersion.TLSv1_3)
    context.load_cert_chain(str(client_files[0]), str(client_files[1]))
    with listening(ca, tmp_path) as port:
        ext, binding = get(port, context)
    assert ext["tls"]["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[version]
    assert ext["tls"]["client_cert_chain"] == [client_files[2]]
    assert ext["tls"]["client_cert_error"] is None
    ours = ext["certwright.tls"]
    assert ours["version"] == version
    if version == "TLSv1.2":
        # Both ends of the connection see the same tls-unique value (RFC 5929).
        assert binding is not None and ours["tls_unique"] == binding.hex()
    else:
        assert ours["tls_unique"] is None  # undefined for TLS 1.3


def test_ok_no_client_certificate_is_an_empty_chain(ca: CertificateAuthority,
                                                    tmp_path: Path) -> None:
    context = ssl.create_default_context(cadata=ca.root.public_bytes(
        serialization.Encoding.PEM).decode())
    with listening(ca, tmp_path) as port:
        ext, _ = get(port, context)
    assert ext["tls"]["client_cert_chain"] == []
    assert ext["certwright.tls"]["client_cert_der"] is None
