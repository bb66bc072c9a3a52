"""The URL ``serve`` prints verifies with the CA's root: curl, no ``-k``.

Issue 11, defect 7: the listener's certificate named only ``localhost`` while ``serve``
printed ``https://127.0.0.1:PORT``, so curl to the printed URL failed verification. The
certificate now also names the literal address the HTTPS listener binds (not a
wildcard), and ``serve`` prints only a URL the certificate covers.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import pytest
from cryptography import x509

from tests.served import Served, curl, serving

pytestmark = pytest.mark.peer("curl")


def _printed_url(base: Path) -> str:
    out = (base / "serve.out").read_text()
    found = re.search(r"enrollment \(HTTPS\): (https://\S+/)", out)
    assert found, out
    return found.group(1)


def _verified(url: str, served: Served) -> None:
    got = curl(f"{url}health", "--cacert", str(served.root_pem))
    assert got.exit_code == 0 and got.status == 200, got.stderr
    assert got.body == b'{"status":"ok"}'


def _listener_ips(served: Served) -> set[str]:
    leaf = x509.load_pem_x509_certificates(
        (served.data / "tls" / "server.pem").read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def test_ok_printed_url_verifies_with_the_root(tmp_path: Path) -> None:
    with serving(tmp_path) as served:
        url = _printed_url(tmp_path)
        assert url == f"https://127.0.0.1:{served.https_port}/"
        _verified(url, served)
        _verified(f"{served.https}/", served)  # https://localhost:PORT still verifies
        assert _listener_ips(served) == {"127.0.0.1"}


def test_ok_address_given_to_serve_is_named(tmp_path: Path) -> None:
    port = _free_port("127.0.0.2")
    with serving(tmp_path, serve_args=["--https", f"127.0.0.2:{port}"]) as served:
        url = _printed_url(tmp_path)
        assert url == f"https://127.0.0.2:{port}/"
        _verified(url, served)
        assert _listener_ips(served) == {"127.0.0.2"}


def test_ok_wildcard_address_prints_a_name_of_the_certificate(tmp_path: Path) -> None:
    port = _free_port("0.0.0.0")
    with serving(tmp_path, serve_args=["--https", f"0.0.0.0:{port}"]) as served:
        url = _printed_url(tmp_path)
        assert url == f"https://localhost:{port}/"
        _verified(url, served)
        ips = _listener_ips(served)
        assert not any(ipaddress.ip_address(a).is_unspecified for a in ips), ips
