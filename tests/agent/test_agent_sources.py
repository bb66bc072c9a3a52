"""Name sources: real nginx configuration files parsed by crossplane (with includes),
Apache configurations with Include, commands, the host; combined and de-duplicated with
every name remembering where it came from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from certwright.agent.sources import derive
from certwright.agent.spec import NameSource
from certwright.errors import CertwrightError
from tests.conftest import require_peer


def host() -> tuple[str, list[str]]:
    return "box.example.internal", ["10.1.2.3", "fd00::3"]


def src(**kwargs: object) -> NameSource:
    return NameSource.model_validate(kwargs)


NGINX = """\
user www-data;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types*;
    include conf.d/*.conf;
    server {
        listen 80 default_server;
        server_name _;
    }
    server {
        listen 443 ssl;
        server_name Shop.Example.Internal "shop2.example.internal." .static.example.internal;
        server_name $hostname;
        location / { return 200; }
    }
}
"""
SITE = """\
server {
    server_name ~^(?<user>\\w+)\\.users\\.example\\.internal$ www.example.* *.cdn.example.internal
                10.0.0.7 shop.example.internal;
}
"""


def nginx_tree(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(NGINX)
    (tmp_path / "conf.d" / "site.conf").write_text(SITE)
    (tmp_path / "conf.d" / "ignored.conf.bak").write_text("server { server_name nope.internal; }")
    return main


def test_ok_nginx_server_names_through_includes(tmp_path: Path) -> None:
    main = nginx_tree(tmp_path)
    d = derive([src(nginx=str(main))], host=host)
    site = tmp_path / "conf.d" / "site.conf"
    assert d.names == {
        "dns:shop.example.internal": (f"nginx {main}:12", f"nginx {site}:2"),
        "dns:shop2.example.internal": (f"nginx {main}:12",),
        "dns:static.example.internal": (f"nginx {main}:12",),
        "dns:*.static.example.internal": (f"nginx {main}:12",),
        "dns:box.example.internal": (f"nginx {main}:13",),
        "dns:*.cdn.example.internal": (f"nginx {site}:2",),
        "ip:10.0.0.7": (f"nginx {site}:2",),
    }
    assert [(s.text, s.reason.split(":")[0]) for s in d.skipped] == [
        ("_", "a catch-all, not a name"),
        ("~^(?<user>\\w+)\\.users\\.example\\.internal$", "a regular expression"),
        ("www.example.*", "a trailing or inner wildcard cannot be put in a certificate"),
    ]


@pytest.mark.peer("nginx")
def test_ok_nginx_t_accepts_the_same_configuration(tmp_path: Path) -> None:
    """nginx itself agrees that the configuration is valid (with the certificate a TLS
    listener needs, and without the system-wide parts)."""
    nginx = require_peer("nginx", "nginx")
    main = nginx_tree(tmp_path)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=t", "-days", "1",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   capture_output=True, check=True)
    text = main.read_text().replace("user www-data;\n", "").replace(
        "include /etc/nginx/mime.types*;", f"ssl_certificate {tmp_path}/c.pem; "
        f"ssl_certificate_key {tmp_path}/k.pem;")
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\n" + text)
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(main)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_fail_nginx_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    main = nginx_tree(tmp_path)
    (tmp_path / "conf.d" / "site.conf").write_text("server { server_name a.internal;\n")
    with pytest.raises(CertwrightError) as err:
        derive([src(nginx=str(main))], host=host)
    assert f"nginx configuration {tmp_path}/conf.d/site.conf:" in str(err.value)
    assert "unexpected end of file" in str(err.value)


def test_fail_nginx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CertwrightError, match="no such file"):
        derive([src(nginx=str(tmp_path / "nginx.conf"))], host=host)


APACHE = """\
ServerRoot "{root}"
# ServerName commented.example.internal
Include conf-enabled/*.conf
IncludeOptional sites-enabled/
<VirtualHost *:443>
    ServerName https://portal.example.internal:443
    ServerAlias www.portal.example.internal \\
                *.portal.example.internal  img?.portal.example.internal
</VirtualHost>
"""


def test_ok_apache_servername_and_aliases_through_include(tmp_path: Path) -> None:
    (tmp_path / "conf-enabled").mkdir()
    (tmp_path / "sites-enabled").mkdir()
    main = tmp_path / "apache2.conf"
    main.write_text(APACHE.format(root=tmp_path))
    (tmp_path / "conf-enabled" / "a.conf").write_text("ServerName main.example.internal\n")
    site = tmp_path / "sites-enabled" / "site"
    site.write_text("<VirtualHost *:443>\n  ServerName [fd00::8]:8443\n  ServerAlias "
                    "PORTAL.example.internal\n  Include " + str(main) + "\n</VirtualHost>\n")
    d = derive([src(apache=str(main))], host=host)
    assert d.names == {
        "dns:main.example.internal": (f"apache {tmp_path}/conf-enabled/a.conf:1",),
        "ip:fd00::8": (f"apache {site}:2",),
        "dns:portal.example.internal": (f"apache {site}:3", f"apache {main}:6"),
        "dns:www.portal.example.internal": (f"apache {main}:7",),
        "dns:*.portal.example.internal": (f"apache {main}:7",),
    }
    assert [s.text for s in d.skipped] == ["img?.portal.example.internal"]


def test_ok_sources_combined_and_deduplicated(tmp_path: Path) -> None:
    script = tmp_path / "names.py"
    script.write_text("print('app.example.internal\\n  box.example.internal 10.1.2.3')\n")
    d = derive([src(static=["BOX.example.internal.", "dns:app.example.internal"]),
                src(command=[sys.executable, str(script)]),
                src(host={"fqdn": True, "ips": True})], host=host)
    cmd = f"command {sys.executable} {script}"
    assert d.names == {
        "dns:box.example.internal": ("static", cmd, "host fqdn"),
        "dns:app.example.internal": ("static", cmd),
        "ip:10.1.2.3": (cmd, "host address"),
        "ip:fd00::3": ("host address",),
    }
    assert d.dns() == ["box.example.internal", "app.example.internal"]


@pytest.mark.parametrize(("case", "command", "message"), [
    ("fail/exit-code", ["sh", "-c", "exit 3"], "exit code 3"),
    ("fail/timeout", {"run": ["sleep", "5"], "timeout": 1}, "no answer within 1 s"),
    ("fail/not-found", ["/nonexistent/names"], "No such file or directory"),
])
def test_fail_command_source(case: str, command: object, message: str) -> None:
    with pytest.raises(CertwrightError) as err:
        derive([src(command=command)], host=host)
    assert message in str(err.value), case


def test_ok_invalid_static_name_is_skipped_with_reason() -> None:
    d = derive([src(static=["ok.example.internal", "bad_name.example.internal"])], host=host)
    assert list(d.names) == ["dns:ok.example.internal"]
    (skipped,) = d.skipped
    assert skipped.source == "static" and "not a valid DNS name" in skipped.reason
