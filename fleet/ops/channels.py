"""Notification channels as data (docs/ops.md, "Notifications"): checks and changes that the API and
the pages share. Errors are ChannelError (bad input: 422) or ChannelConflict (409); their text never
repeats a secret. A channel's secret is write-only: callers show `secret_set`, never the value."""

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from fleet.ops import notify, transports, webhook_sign
from fleet.ops.models import AlertRule, NotificationChannel, Severity
from fleet.settings import Settings

KINDS = ("webhook", "email")
URL_MAX = 500
RECIPIENTS_MAX = 20
RATE_MAX = 3600
ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ChannelError(ValueError):
    """Bad input for a channel (422)."""


class ChannelConflict(Exception):
    """The change clashes with what is stored (409)."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ChannelError("a channel name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                           "or digit")
    return name


def check_target(kind: str, target: dict[str, Any]) -> dict[str, Any]:
    """The target of a channel of this kind, normalised: webhook {"url"}, email {"to": [...]}."""
    if kind == "webhook":
        url = target.get("url")
        if set(target) != {"url"} or not isinstance(url, str):
            raise ChannelError('a webhook target is {"url": "https://..."}')
        if len(url) > URL_MAX:
            raise ChannelError(f"the webhook URL is longer than {URL_MAX} characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ChannelError("the webhook URL is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChannelError("the webhook URL must be http:// or https:// with a host")
        if parts.username or parts.password:
            raise ChannelError("the webhook URL must not carry a user or password (the channel's secret signs it)")
        if parts.fragment or any(c.isspace() or ord(c) < 32 for c in url):
            raise ChannelError("the webhook URL must have no fragment, space or control character")
        return {"url": url}
    if kind == "email":
        to = target.get("to")
        if set(target) != {"to"} or not isinstance(to, list) or not to:
            raise ChannelError('an e-mail target is {"to": ["ops@example.org", ...]}')
        if len(to) > RECIPIENTS_MAX:
            raise ChannelError(f"an e-mail channel has at most {RECIPIENTS_MAX} recipients")
        for number, address in enumerate(to, 1):
            if not isinstance(address, str) or len(address) > 254 or not ADDRESS.match(address):
                raise ChannelError(f"recipient {number} is not an e-mail address (name@domain)")
        return {"to": list(dict.fromkeys(to))}
    raise ChannelError(f"a channel's kind is one of {', '.join(KINDS)}")


def check_secret(kind: str, secret: str | None) -> str | None:
    if kind != "webhook":
        if secret is not None:
            raise ChannelError("only a webhook channel has a secret")
        return None
    if secret is None:
        raise ChannelError("a webhook channel needs a secret: 'whsec_' + base64 of 24 to 64 random bytes")
    try:
        webhook_sign.secret_key(secret)
    except webhook_sign.SecretError as err:
        raise ChannelError(str(err)) from None
    return secret


def check_rate(rate_per_hour: int) -> int:
    if not 1 <= rate_per_hour <= RATE_MAX:
        raise ChannelError(f"rate_per_hour is 1 to {RATE_MAX} messages")
    return rate_per_hour


def check_severity(severity: str) -> Severity:
    try:
        return Severity(severity)
    except ValueError:
        raise ChannelError(f"min_severity is one of {', '.join(s.value for s in Severity)}") from None


async def create(*, name: str, kind: str, target: dict[str, Any], secret: str | None = None,
                 min_severity: str = Severity.WARNING.value, rate_per_hour: int = 20, enabled: bool = True,
                 by: str) -> NotificationChannel:
    if kind not in KINDS:
        raise ChannelError(f"a channel's kind is one of {', '.join(KINDS)}")
    values = {"name": check_name(name), "kind": kind, "target": check_target(kind, target),
              "secret": check_secret(kind, secret), "min_severity": check_severity(min_severity),
              "rate_per_hour": check_rate(rate_per_hour), "enabled": enabled, "updated_by": by}
    try:
        async with in_transaction() as conn:
            if await NotificationChannel.filter(name=name).using_db(conn).exists():
                raise ChannelConflict(f"a channel named {name!r} exists")
            return await NotificationChannel.create(**values, using_db=conn)
    except IntegrityError:  # made by someone else in the meantime
        raise ChannelConflict(f"a channel named {name!r} exists") from None


async def update(channel_id: int, changes: dict[str, Any], *, by: str) -> NotificationChannel:
    """Change the fields given (name, target, secret, min_severity, rate_per_hour, enabled). A new
    name is written into the rules that named the old one, in the same transaction."""
    try:
        async with in_transaction() as conn:
            channel = await NotificationChannel.filter(id=channel_id).select_for_update().using_db(conn).first()
            if channel is None:
                raise LookupError(f"no channel {channel_id}")
            old_name = channel.name
            if "name" in changes and changes["name"] != old_name:
                channel.name = check_name(changes["name"])
                if await NotificationChannel.filter(name=channel.name).using_db(conn).exists():
                    raise ChannelConflict(f"a channel named {channel.name!r} exists")
                for rule in await AlertRule.all().using_db(conn):
                    if old_name in (rule.channels or []):
                        rule.channels = [channel.name if n == old_name else n for n in rule.channels]
                        await rule.save(using_db=conn, update_fields=["channels"])
            if "target" in changes:
                channel.target = check_target(channel.kind, changes["target"])
            if "secret" in changes:
                channel.secret = check_secret(channel.kind, changes["secret"])
            if "min_severity" in changes:
                channel.min_severity = check_severity(changes["min_severity"])
            if "rate_per_hour" in changes:
                channel.rate_per_hour = check_rate(changes["rate_per_hour"])
            if "enabled" in changes:
                channel.enabled = bool(changes["enabled"])
            channel.updated_by = by
            await channel.save(using_db=conn)
    except IntegrityError:  # the name taken by someone else in the meantime
        raise ChannelConflict(f"a channel named {changes.get('name')!r} exists") from None
    return channel


async def rules_naming(name: str) -> list[str]:
    return [r.name for r in await AlertRule.all().order_by("name") if name in (r.channels or [])]


async def delete(channel_id: int) -> NotificationChannel:
    """Delete a channel no rule sends to (ChannelConflict names the rules that do); its outbox goes with it."""
    channel = await NotificationChannel.get_or_none(id=channel_id)
    if channel is None:
        raise LookupError(f"no channel {channel_id}")
    naming = await rules_naming(channel.name)
    if naming:
        shown = ", ".join(repr(n) for n in naming[:5]) + (" and more" if len(naming) > 5 else "")
        raise ChannelConflict(f"rules {shown} send to this channel: take it out of them first")
    await channel.delete()
    return channel


async def send_test(channel: NotificationChannel, settings: Settings) -> dict[str, Any]:
    """Send a test message now (not through the outbox, not counted in the rate): what happened."""
    now = datetime.now(UTC)
    try:
        message_id = f"test_{channel.id}_{int(now.timestamp())}"
        detail = await notify.deliver(channel, transports.Smtp.of(settings), message_id, None, digest=False, now=now)
    except transports.SendError as err:
        return {"ok": False, "detail": str(err)}
    return {"ok": True, "detail": detail}
