"""Sending one message: a signed webhook POST (httpx) or an e-mail over SMTP (the standard library's
smtplib, in a thread). A failure is a SendError whose text is safe to store and show: it never holds
the webhook secret, the SMTP password or the webhook URL (which may carry a token of its own)."""

import asyncio
import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from fleet.ops import webhook_sign
from fleet.settings import Settings

TIMEOUT_S = 10.0  # one attempt at one message, connect to answer
ERROR_MAX = 300  # Notification.last_error's length


class SendError(Exception):
    """One attempt failed; str() is safe to store (no secret, no URL)."""


def scrub(text: str, *hidden: str | None) -> str:
    for value in hidden:
        if value:
            text = text.replace(value, "…")
    return text[:ERROR_MAX]


def _describe(err: BaseException) -> str:
    detail = str(err) or type(err).__name__
    return f"{type(err).__name__}: {detail}"


async def post_webhook(url: str, secret: str, message_id: str, document: dict[str, Any], *,
                       timeout: float = TIMEOUT_S) -> str:
    """POST the JSON document signed per Standard Webhooks; a 2xx answer is success (redirects are not
    followed). Returns what happened, e.g. 'HTTP 204 from hooks.example.org'."""
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    headers = webhook_sign.headers(secret, message_id, int(time.time()), body)
    headers["content-type"] = "application/json"
    host = urlsplit(url).hostname or "?"
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            answer = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise SendError(f"no answer from {host} within {timeout:g} s") from None
    except httpx.HTTPError as err:
        raise SendError(scrub(f"{host}: {_describe(err)}", url, secret)) from None
    if not 200 <= answer.status_code < 300:
        raise SendError(f"HTTP {answer.status_code} from {host}")
    return f"HTTP {answer.status_code} from {host}"


@dataclass(frozen=True)
class Smtp:
    """Where e-mail goes (FLEET_SMTP_*); the password stays a SecretStr until the login."""

    host: str | None
    port: int
    sender: str
    user: str | None
    password: SecretStr | None
    starttls: bool

    @classmethod
    def of(cls, settings: Settings) -> "Smtp":
        return cls(settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_user,
                   settings.smtp_password, settings.smtp_starttls)

    def __repr__(self) -> str:
        return f"Smtp({self.host}:{self.port}, starttls={self.starttls}, user={self.user!r})"


def _send_blocking(smtp: Smtp, message: EmailMessage, timeout: float) -> int:
    assert smtp.host is not None
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.user and smtp.password is not None:
            client.login(smtp.user, smtp.password.get_secret_value())
        refused = client.send_message(message)
    return len(getaddresses(message.get_all("To", []))) - len(refused)


async def send_email(smtp: Smtp, message: EmailMessage, *, timeout: float = TIMEOUT_S) -> str:
    """Hand the message to the SMTP server; success when it accepts it for at least one recipient
    (smtplib raises when it accepts none). Returns what happened."""
    if not smtp.host:
        raise SendError("FLEET_SMTP_HOST is not set: e-mail cannot be sent")
    password = smtp.password.get_secret_value() if smtp.password else None
    try:
        accepted = await asyncio.to_thread(_send_blocking, smtp, message, timeout)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as err:
        raise SendError(scrub(f"SMTP {smtp.host}:{smtp.port}: {_describe(err)}", password)) from None
    return f"accepted by {smtp.host}:{smtp.port} for {accepted} recipient(s)"
