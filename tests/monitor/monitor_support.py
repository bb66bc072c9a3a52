"""For the monitor tests: a webhook receiver (a real HTTP server on loopback), an agent
check-in client that posts the way an agent does, and configuration helpers."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.server
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

WEBHOOK_SECRET = b"0123456789abcdef-monitor-test-secret"


def add_monitor_config(data: Path, text: str) -> None:
    """Append a ``monitor:`` section (YAML, top level) to the CA's configuration."""
    cfg = data / "certwright.yaml"
    cfg.write_text(cfg.read_text() + "\n" + text.strip("\n") + "\n")


def write_secret(data: Path, name: str = "webhook.secret") -> str:
    (data / name).write_bytes(WEBHOOK_SECRET)
    (data / name).chmod(0o600)
    return name


def fast_monitor(data: Path, hook_url: str, *, grace: str = "2s", extra: str = "") -> None:
    """A monitor that evaluates every second, with short grace periods and alerts to
    the webhook at ``hook_url`` (signed with WEBHOOK_SECRET); ``extra`` is more YAML
    for the ``monitor:`` section, indented two spaces."""
    add_monitor_config(data, f"""
monitor:
  interval: 1s
  grace: {grace}
  agents: {{interval: 1h, grace: 1s}}
{extra.rstrip()}
  alerts:
    webhook: {{url: "{hook_url}", secret_file: {write_secret(data)}, backoff: 1s,
               attempts: 2}}
    reminder: 1d
""")


class Receiver:
    """A webhook endpoint: records each POST; answers ``fail_first`` of them with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    fail = len(outer.posts) <= outer.fail_first
                self.send_response(503 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def delivered(self) -> list[dict[str, Any]]:
        """Every event of every POST answered 2xx, after checking its HMAC signature."""
        out = []
        with self.lock:
            posts = list(enumerate(self.posts))
        for i, (headers, body) in posts:
            expected = "sha256=" + hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-certwright-signature"], expected), headers
            assert headers["content-type"] == "application/json"
            if i >= self.fail_first:
                out += json.loads(body)["events"]
        return out

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.delivered()
            if predicate(events):
                return events
            time.sleep(0.1)
        raise AssertionError(f"webhook did not receive what was expected: {self.delivered()}")


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_report(name: str, names: list[str], *, profile: str = "tls-server",
                cert: Any = None, error: str | None = None,
                at: dt.datetime | None = None) -> dict[str, Any]:
    """One spec as an agent reports it; ``cert`` is the installed x509 certificate."""
    at = at or dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "name": name, "issuer": "https://localhost/acme/tls-server/directory",
        "protocol": "acme", "profile": profile, "names": names,
        "renewal": {"next_at": iso(at + dt.timedelta(days=1)), "rule": "1/3 left"},
        "last_attempt": {"at": iso(at), "ok": error is None, "error": error},
    }
    if cert is not None:
        from cryptography import x509

        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        report["certificate"] = {
            "serial": format(cert.serial_number, "x"),
            "not_before": iso(cert.not_valid_before_utc),
            "not_after": iso(cert.not_valid_after_utc),
            "names": [f"dns:{n}" for n in san.get_values_for_type(x509.DNSName)],
            "installed_at": iso(at)}
    return report


class AgentClient:
    """Checks in like the agent: JSON over HTTPS, verified against the CA's root, with
    the host's bearer token."""

    def __init__(self, base: str, root_pem: Path, host: str, token: str) -> None:
        self.base = base
        self.host = host
        self.token = token
        self.ctx = ssl.create_default_context(cafile=str(root_pem))

    def checkin(self, specs: list[dict[str, Any]], *, interval: int = 3600,
                token: str | None = None) -> httpx.Response:
        body = {"version": 1, "host": self.host, "agent_version": "0.1.0",
                "sent_at": iso(dt.datetime.now(dt.UTC)), "checkin_interval": interval,
                "specs": specs}
        secret = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        with httpx.Client(verify=self.ctx, trust_env=False, timeout=10) as client:
            return client.post(f"{self.base}/monitor/v1/checkin", json=body, headers=headers)


@contextlib.contextmanager
def receiving(fail_first: int = 0) -> Iterator[Receiver]:
    with Receiver(fail_first) as r:
        yield r
