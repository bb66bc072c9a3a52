"""Alert sinks: a signed webhook and e-mail over SMTP.

One evaluation sends at most one webhook POST and one e-mail, carrying every event it
produced (findings opened, reminded, resolved): a burst of findings is one message, not
a storm. A delivery that fails is retried at the next evaluation (the state layer
un-claims it), so a receiver may see one event twice; each carries the finding id and
the event name to deduplicate on, and retries of one POST share X-Certwright-Delivery.
"""

from __future__ import annotations

import datetime as dt
import email.message
import hashlib
import hmac
import json
import smtplib
import ssl
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx

from certwright.errors import config_error
from certwright.model.monitor import AlertEvent
from certwright.monitor.config import SmtpSettings, WebhookSettings

__all__ = ["SIGNATURE_HEADER", "AlertError", "Sink", "SmtpSink", "WebhookSink", "payload",
           "sign"]

SIGNATURE_HEADER = "X-Certwright-Signature"


class AlertError(Exception):
    """A sink could not deliver (after its retries)."""


class Sink(Protocol):
    name: str

    def send(self, events: Sequence[AlertEvent], now: dt.datetime) -> None:
        """Deliver every event or raise AlertError."""
        ...


def payload(events: Sequence[AlertEvent], now: dt.datetime) -> bytes:
    return json.dumps({
        "source": "certwright",
        "sent_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "events": [{"event": e.event, "finding": e.finding.as_json()} for e in events],
    }, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=HEX``: HMAC-SHA256 of the exact body bytes under the shared secret."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _read_secret(path: Path, what: str) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise config_error(f"{what} {path}: {e.strerror or e}") from None
    if len(secret) < 16:
        raise config_error(f"{what} {path}: at least 16 bytes of secret are needed")
    return secret


class WebhookSink:
    name = "webhook"

    def __init__(self, settings: WebhookSettings, base: Path, *,
                 stopping: threading.Event | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.secret = _read_secret(base / settings.secret_file, "monitor.alerts.webhook.secret_file")
        self.stopping = stopping or threading.Event()
        self.transport = transport

    def send(self, events: Sequence[AlertEvent], now: dt.datetime) -> None:
        body = payload(events, now)
        headers = {"Content-Type": "application/json", "User-Agent": "certwright-monitor",
                   SIGNATURE_HEADER: sign(self.secret, body),
                   "X-Certwright-Delivery": str(uuid.uuid4())}
        s = self.settings
        delay = s.backoff.total_seconds()
        last = "no attempt"
        with httpx.Client(timeout=s.timeout.total_seconds(), transport=self.transport,
                          trust_env=False, follow_redirects=False) as client:
            for attempt in range(s.attempts):
                if attempt:
                    # Back off; a server shutting down stops waiting at once.
                    if self.stopping.wait(delay):
                        break
                    delay *= 2
                try:
                    r = client.post(s.url, content=body, headers=headers)
                except httpx.HTTPError as e:
                    last = f"{type(e).__name__}: {e}"
                    continue
                if 200 <= r.status_code < 300:
                    return
                last = f"HTTP {r.status_code}"
                if r.status_code < 500 and r.status_code not in (408, 429):
                    break  # the receiver refuses this message; repeating will not help
        raise AlertError(f"webhook {s.url}: {last}")


def _subject(events: Sequence[AlertEvent]) -> str:
    if len(events) == 1:
        f = events[0].finding
        word = {"open": "", "reminder": "still: ", "resolved": "resolved: ",
                "withdrawn": "withdrawn: "}[events[0].event]
        return f"[certwright] {word}{f.severity} {f.kind}: {f.host or f.subject}"
    opened = sum(e.event in ("open", "reminder") for e in events)
    return f"[certwright] {opened} open, {len(events) - opened} closed findings"


class SmtpSink:
    name = "smtp"

    def __init__(self, settings: SmtpSettings, base: Path) -> None:
        self.settings = settings
        self.password = (_read_secret(base / settings.password_file,
                                      "monitor.alerts.smtp.password_file").decode()
                         if settings.password_file else None)

    def message(self, events: Sequence[AlertEvent], now: dt.datetime) -> email.message.EmailMessage:
        s = self.settings
        msg = email.message.EmailMessage()
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.to)
        msg["Subject"] = _subject(events)
        msg["Date"] = now.strftime("%a, %d %b %Y %H:%M:%S +0000")
        lines = []
        for e in events:
            f = e.finding
            lines.append(f"{e.event.upper():9} {f.severity:8} {f.kind}: {f.message}")
            lines.append(f"          since {f.since:%Y-%m-%d %H:%M} UTC, finding #{f.id}")
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, events: Sequence[AlertEvent], now: dt.datetime) -> None:
        s = self.settings
        timeout = s.timeout.total_seconds()
        try:
            smtp: smtplib.SMTP
            if s.tls:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=timeout)
            with smtp:
                if s.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if s.username is not None and self.password is not None:
                    smtp.login(s.username, self.password)
                smtp.send_message(self.message(events, now))
        except (OSError, smtplib.SMTPException) as e:
            raise AlertError(f"smtp {s.host}:{s.port}: {type(e).__name__}: {e}") from None
