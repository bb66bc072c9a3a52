"""Agent specs: precise errors naming the file and the key, through the real command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.agent.spec import load_specs, parse_spec_text
from certwright.errors import CertwrightError
from tests.agent_support import run_agent, safe_directory
from tests.cli import assert_one_line_error

GOOD = """\
name: web
issuer:
  acme:
    directory: https://ca.internal:8443/acme/directory
    contact: [ops@example.internal]
    challenge: {http-01: {webroot: /var/www/html}}
names:
  - static: [web.example.internal, 10.0.0.5]
  - nginx: /etc/nginx/nginx.conf
  - command: [hostname, -f]
  - host: {fqdn: true, ips: false}
key: {type: rsa, bits: 3072}
output:
  directory: /etc/ssl/web
  fullchain: fullchain.pem
  pkcs12: {file: web.p12, passphrase_file: /etc/ssl/web.pass}
  mode: "0640"
hooks:
  deploy: {run: [systemctl, reload, nginx], timeout: 30s}
renewal: {retry_base: 1m, retry_cap: 1h}
endpoints: [{host: 127.0.0.1, port: 443, sni: web.example.internal}]
trust_anchor: /etc/ssl/root.pem
"""


def test_ok_full_spec() -> None:
    spec = parse_spec_text(GOOD, "web.yaml")
    assert spec.issuer.protocol == "acme"
    assert spec.issuer.validation == "http-01 webroot"
    assert spec.issuer.acme is not None
    assert spec.issuer.acme.contact == ("mailto:ops@example.internal",)
    assert spec.names[2].command is not None and spec.names[2].command.run == ("hostname", "-f")
    assert spec.output.mode == 0o640
    assert spec.output.files() == {"key": "privkey.pem", "cert": "cert.pem",
                                   "fullchain": "fullchain.pem", "pkcs12": "web.p12"}
    assert spec.hooks.deploy is not None and spec.hooks.deploy.timeout.total_seconds() == 30
    assert str(spec.key) == "RSA 3072"


def test_ok_challenge_methods() -> None:
    for challenge, method in [
        ("{tls-alpn-01: {standalone: '0.0.0.0:443'}}", "tls-alpn-01 standalone"),
        ("{dns-01: {rfc2136: {server: '[fd00::53]:53', key_file: /etc/k.key}}}",
         "dns-01 rfc2136"),
        ("{dns-01: {hook: /usr/local/bin/dns-hook, propagation: 30s}}", "dns-01 hook"),
    ]:
        spec = parse_spec_text(GOOD.replace("{http-01: {webroot: /var/www/html}}", challenge),
                               "web.yaml")
        assert spec.issuer.validation == method, challenge



@pytest.mark.parametrize(("case", "edit", "message"), [
    ("fail/duplicate-key", lambda t: t + "name: other\n", "web.yaml: line 23 is not valid YAML: "
     "duplicate key 'name'"),
    ("fail/unknown-key-suggests", lambda t: t.replace("  mode:", "  mdoe:"),
     "web.yaml: output.mdoe: unknown key (did you mean 'mode'?)"),
    ("fail/two-issuers", lambda t: t.replace("issuer:\n", "issuer:\n  est: {url: https://e}\n"),
     "web.yaml: issuer: issuer: give exactly one of acme, est (got acme, est)"),
    ("fail/writable-mode", lambda t: t.replace('"0640"', '"0666"'),
     "web.yaml: output.mode: 0666 lets others write the files"),
    ("fail/relative-directory", lambda t: t.replace("/etc/ssl/web\n", "ssl/web\n"),
     "web.yaml: output.directory: 'ssl/web' is not an absolute path"),
    ("fail/file-name-with-slash", lambda t: t.replace("fullchain.pem", "../x.pem"),
     "web.yaml: output.fullchain: '../x.pem': give a plain file name inside directory"),
    ("fail/source-with-two-kinds", lambda t: t.replace("  - host: {fqdn: true, ips: false}",
                                                       "  - {host: {}, static: [a.internal]}"),
     "web.yaml: names.3: name source: give exactly one of static, nginx, apache, command, "
     "host (got static, host)"),
    ("fail/bad-duration", lambda t: t.replace("timeout: 30s", "timeout: soon"),
     "web.yaml: hooks.deploy.timeout: 'soon' is not a duration"),
    ("fail/rsa-bits", lambda t: t.replace("bits: 3072", "bits: 1024"),
     "web.yaml: key.bits: RSA keys are 2048, 3072 or 4096 bits"),
    ("fail/listen", lambda t: t.replace("{webroot: /var/www/html}", "{standalone: ':http'}"),
     "web.yaml: issuer.acme.challenge.http-01.standalone: ':http': give the listen address"),
    ("fail/two-challenges", lambda t: t.replace(
        "{http-01: {webroot: /var/www/html}}",
        "{http-01: {webroot: /w}, tls-alpn-01: {standalone: ':443'}}"),
     "web.yaml: issuer.acme.challenge: challenge: give exactly one of http_01, tls_alpn_01, "
     "dns_01 (got http_01, tls_alpn_01)"),
    ("fail/tls-alpn-listen", lambda t: t.replace(
        "{http-01: {webroot: /var/www/html}}", "{tls-alpn-01: {standalone: '443'}}"),
     "web.yaml: issuer.acme.challenge.tls-alpn-01.standalone: '443': give the listen "
     "address as HOST:PORT"),
    ("fail/dns-01-hook-and-rfc2136", lambda t: t.replace(
        "{http-01: {webroot: /var/www/html}}",
        "{dns-01: {hook: [x], rfc2136: {server: '10.0.0.1:53', key_file: /k}}}"),
     "web.yaml: issuer.acme.challenge.dns-01: dns-01: give exactly one of hook, rfc2136 "
     "(got hook, rfc2136)"),
    ("fail/rfc2136-relative-key-file", lambda t: t.replace(
        "{http-01: {webroot: /var/www/html}}",
        "{dns-01: {rfc2136: {server: '10.0.0.1:53', key_file: k.key}}}"),
     "web.yaml: issuer.acme.challenge.dns-01.rfc2136.key_file: 'k.key' is not an absolute "
     "path"),
    ("fail/rfc2136-algorithm", lambda t: t.replace(
        "{http-01: {webroot: /var/www/html}}",
        "{dns-01: {rfc2136: {server: '10.0.0.1:53', key_file: /k, algorithm: hmac-md5}}}"),
     "web.yaml: issuer.acme.challenge.dns-01.rfc2136.algorithm: "),
])
def test_fail_spec_errors_name_file_and_key(case: str, edit: object, message: str) -> None:
    assert callable(edit)
    with pytest.raises(CertwrightError) as err:
        parse_spec_text(edit(GOOD), "web.yaml")
    assert message in str(err.value), (case, str(err.value))


@pytest.fixture
def specs() -> Iterator[Path]:
    with safe_directory() as d:
        (d / "specs").mkdir()
        yield d


def test_fail_duplicate_spec_names_across_files(specs: Path) -> None:
    (specs / "specs" / "a.yaml").write_text(GOOD)
    (specs / "specs" / "b.yaml").write_text(GOOD)
    with pytest.raises(CertwrightError) as err:
        load_specs(specs / "specs")
    assert str(err.value) == (f"{specs}/specs/b.yaml: name: 'web' is already the name of the "
                              f"spec in {specs}/specs/a.yaml")


def test_fail_cli_invalid_spec_one_line_error(specs: Path) -> None:
    (specs / "specs" / "web.yaml").write_text(GOOD.replace("  mode:", "  mdoe:"))
    proc = run_agent(specs / "specs", specs / "state", "plan")
    assert proc.returncode == 2
    assert_one_line_error(proc, f"{specs}/specs/web.yaml: output.mdoe: unknown key")


def test_fail_cli_unknown_spec_name(specs: Path) -> None:
    (specs / "specs" / "web.yaml").write_text(GOOD)
    proc = run_agent(specs / "specs", specs / "state", "enroll", "nope")
    assert_one_line_error(proc, "no spec named 'nope'", "known: web")
