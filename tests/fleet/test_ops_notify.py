"""The notifier (fleet/ops/notify.py) on a real database, a real SMTP server (aiosmtpd) and a real
HTTP receiver: pending alert events routed per rule and channel, signed webhooks checked with the
`standardwebhooks` verifier, e-mail arriving, the digest, the hourly rate with held digests, retries
with a doubling delay up to a bound. Times are passed to tick() (no sleeping)."""

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from fleet.db import database
from fleet.ops import channels, webhook_sign
from fleet.ops.models import AlertEvent, Notification, NotificationChannel, Severity
from fleet.ops.notify import Notifier
from fleet.settings import Settings
from tests.fleet.notify_kit import Hook, Mailbox, a_rule, raise_alerts, smtp_server, webhook_receiver
from tests.support.mosquitto import free_port

WARD = "Phường 1"
PASSWORD = "hunter2-smtp-password"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
def hook() -> Iterator[Hook]:
    with webhook_receiver() as receiver:
        yield receiver


def settings_for(url: str, box: Mailbox, **extra: Any) -> Settings:
    return Settings(database_url=url, smtp_host=box.host, smtp_port=box.port, smtp_starttls=False,
                    smtp_from="ioc@example.org", **extra)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[None]:
    async with database(settings):
        yield


async def both_channels(hook: Hook, **extra: Any) -> tuple[NotificationChannel, NotificationChannel, str]:
    secret = webhook_sign.new_secret()
    web = await channels.create(name="ioc-hook", kind="webhook", target={"url": hook.url}, secret=secret, by="t",
                                **extra)
    mail = await channels.create(name="ops-mail", kind="email", target={"to": ["ops@example.org"]}, by="t", **extra)
    return web, mail, secret


def verified(hook: Hook, secret: str, call: int = -1) -> dict[str, Any]:
    headers, body = hook.calls[call]
    document: dict[str, Any] = Webhook(secret).verify(body, headers)
    return document


async def test_one_alert_reaches_webhook_and_email(tmp_path: Path, mailbox: Mailbox, hook: Hook) -> None:
    async with opened(settings_for(f"sqlite://{tmp_path / 'f.sqlite3'}", mailbox)):
        _, _, secret = await both_channels(hook)
        rule = await a_rule("lamp offline", ["ioc-hook", "ops-mail"], Severity.CRITICAL)
        now = datetime.now(UTC)
        [event] = await raise_alerts(rule, ["lamp-17"], WARD, now)
        await Notifier(settings_for("sqlite://unused", mailbox)).tick(now)

        assert len(hook.calls) == 1
        document = verified(hook, secret)
        assert document["type"] == "alert.raised" and document["data"]["count"] == 1
        alert = document["data"]["events"][0]["alert"]
        assert (alert["device_id"], alert["ward"], alert["rule"], alert["severity"], alert["state"]) == (
            "lamp-17", WARD, "lamp offline", "critical", "open")
        sent = await Notification.filter(state="sent").order_by("id")
        assert hook.calls[0][0]["webhook-id"] in {f"ntf_{n.id}" for n in sent}
        with pytest.raises(Exception, match="signature"):
            Webhook(webhook_sign.new_secret()).verify(hook.calls[0][1], hook.calls[0][0])

        [mail] = mailbox.received
        assert mailbox.recipients == [["ops@example.org"]]
        subject, body = str(mail["Subject"]), mail.get_content()
        for told in ("lamp-17", WARD, "lamp offline", "CRITICAL", "open", "raised"):
            assert told in subject
        for line in ("Device:   lamp-17 (esp32)", f"Ward:     {WARD}", "Rule:     lamp offline (offline)",
                     "Severity: critical", "State:    open", "lamp-17 offline for 6 min"):
            assert line in body
        assert (await AlertEvent.get(id=event.id)).notify == "done"
        assert [(n.state, n.digest, n.attempts) for n in sent] == [("sent", False, 1)] * 2


async def test_200_alerts_in_one_ward_make_one_digest_each(database_url: str, mailbox: Mailbox, hook: Hook) -> None:
    settings = settings_for(database_url, mailbox)
    async with opened(settings):
        _, _, secret = await both_channels(hook)
        rule = await a_rule("cabinet power", ["ioc-hook", "ops-mail"], Severity.MAJOR)
        now = datetime.now(UTC)
        devices = [f"lamp-{n:03d}" for n in range(200)]
        await raise_alerts(rule, devices, WARD, now)
        await Notifier(settings).tick(now)

        assert len(hook.calls) == 1 and len(mailbox.received) == 1
        document = verified(hook, secret)
        assert document["type"] == "alert.digest"
        assert document["data"]["wards"] == [{"ward": WARD, "count": 200}]
        assert sorted(e["alert"]["device_id"] for e in document["data"]["events"]) == devices
        mail = mailbox.received[0]
        assert "200 alert changes in 1 ward(s): 200 major" in str(mail["Subject"])
        body = mail.get_content()
        assert f"{WARD} (200)" in body and all(f" {d}  rule cabinet power" in body for d in devices)
        rows = await Notification.all()
        assert [(n.state, n.digest, len(n.event_ids)) for n in rows] == [("sent", True, 200)] * 2
        assert await AlertEvent.filter(notify="pending").count() == 0


async def test_the_hourly_rate_holds_a_digest_until_the_hour_allows(tmp_path: Path, mailbox: Mailbox,
                                                                    hook: Hook) -> None:
    settings = settings_for(f"sqlite://{tmp_path / 'f.sqlite3'}", mailbox)
    async with opened(settings):
        secret = webhook_sign.new_secret()
        await channels.create(name="ioc-hook", kind="webhook", target={"url": hook.url}, secret=secret,
                              rate_per_hour=3, by="t")
        rule = await a_rule("speaker down", ["ioc-hook"])
        notifier = Notifier(settings)
        t0 = datetime.now(UTC)
        made: list[int] = []

        async def alerts_at(minutes: int, count: int) -> None:
            at = t0 + timedelta(minutes=minutes)
            made.extend(e.id for e in await raise_alerts(rule, [f"spk-{minutes}-{n}" for n in range(count)], WARD, at))
            await notifier.tick(at)

        await alerts_at(0, 2)  # two messages (2 of 3 this hour)
        assert len(hook.calls) == 2
        await alerts_at(1, 3)  # more than the hour's room (1): one digest of 3 (3 of 3)
        assert len(hook.calls) == 3 and verified(hook, secret)["data"]["count"] == 3
        await alerts_at(2, 2)  # no room: held
        await alerts_at(3, 1)  # joins the held digest
        await notifier.tick(t0 + timedelta(minutes=59))
        assert len(hook.calls) == 3
        held = await Notification.get(state="held")
        assert len(held.event_ids) == 3 and held.next_try_at == t0 + timedelta(hours=1)

        await notifier.tick(t0 + timedelta(minutes=61))  # the first two left the hour: released and sent
        assert len(hook.calls) == 4
        last = verified(hook, secret)
        assert last["type"] == "alert.digest" and last["data"]["count"] == 3
        carried = [e["event_id"] for call in range(4) for e in verified(hook, secret, call)["data"]["events"]]
        assert sorted(carried) == sorted(made)  # every event told exactly once: none lost, none twice
        assert await Notification.filter(state="sent").count() == 4


async def test_failures_are_retried_with_a_doubling_delay_up_to_a_bound(tmp_path: Path, mailbox: Mailbox,
                                                                         hook: Hook,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    closed = free_port()
    settings = Settings(database_url=f"sqlite://{tmp_path / 'f.sqlite3'}", smtp_host="127.0.0.1", smtp_port=closed,
                        smtp_starttls=False, smtp_user="fleet", smtp_password=PASSWORD)
    async with opened(settings):
        secret = webhook_sign.new_secret()
        await channels.create(name="ioc-hook", kind="webhook", target={"url": hook.url}, secret=secret, by="t")
        await channels.create(name="ops-mail", kind="email", target={"to": ["ops@example.org"]}, by="t")
        rule = await a_rule("camera stalled", ["ioc-hook", "ops-mail"])
        notifier = Notifier(settings, attempts_max=3)
        hook.statuses[:] = [500, 500, 500]
        t0 = datetime.now(UTC)
        caplog.set_level(logging.INFO)
        await raise_alerts(rule, ["cam-1"], WARD, t0)

        await notifier.tick(t0)
        web = await Notification.get(channel__name="ioc-hook")
        mail = await Notification.get(channel__name="ops-mail")
        assert (web.state, web.attempts, web.last_error) == ("pending", 1, "HTTP 500 from 127.0.0.1")
        assert web.next_try_at == t0 + timedelta(seconds=30)
        assert mail.state == "pending" and mail.last_error is not None
        assert f"SMTP 127.0.0.1:{closed}" in mail.last_error and "Connection" in mail.last_error

        await notifier.tick(t0 + timedelta(seconds=29))  # not yet due
        assert len(hook.calls) == 1
        await notifier.tick(t0 + timedelta(seconds=30))
        web = await Notification.get(id=web.id)
        assert (web.attempts, web.next_try_at) == (2, t0 + timedelta(seconds=90))  # then 60 s
        await notifier.tick(t0 + timedelta(seconds=90))
        web, mail = await Notification.get(id=web.id), await Notification.get(id=mail.id)
        assert (web.state, web.attempts, web.next_try_at, web.last_error) == ("failed", 3, None,
                                                                              "HTTP 500 from 127.0.0.1")
        assert (mail.state, mail.attempts) == ("failed", 3)
        await notifier.tick(t0 + timedelta(hours=5))
        assert len(hook.calls) == 3  # the bound holds

        hook.statuses[:] = [503]  # a receiver that fails once, then answers
        await raise_alerts(rule, ["cam-2"], WARD, t0 + timedelta(hours=5))
        await notifier.tick(t0 + timedelta(hours=5))
        await notifier.tick(t0 + timedelta(hours=5, seconds=30))
        again = await Notification.filter(channel__name="ioc-hook").order_by("-id").first()
        assert again is not None and (again.state, again.attempts, again.last_error) == ("sent", 2, None)
        for row in await Notification.all():
            assert PASSWORD not in (row.last_error or "") and secret not in (row.last_error or "")
        assert PASSWORD not in caplog.text and secret not in caplog.text
        assert "giving up" in caplog.text  # the failures were logged (without the secrets)


async def test_routing_by_rule_severity_and_enabled(tmp_path: Path, mailbox: Mailbox, hook: Hook) -> None:
    settings = settings_for(f"sqlite://{tmp_path / 'f.sqlite3'}", mailbox)
    async with opened(settings):
        secret = webhook_sign.new_secret()
        await channels.create(name="ioc-hook", kind="webhook", target={"url": hook.url}, secret=secret,
                              min_severity="major", by="t")
        await channels.create(name="ops-mail", kind="email", target={"to": ["ops@example.org"]}, enabled=False,
                              by="t")
        minor = await a_rule("heap low", ["ioc-hook", "ops-mail"], Severity.MINOR, kind="heap_low")
        critical = await a_rule("offline", ["ioc-hook", "ops-mail", "no-such-channel"], Severity.CRITICAL)
        quiet = await a_rule("disk", [], Severity.CRITICAL, kind="disk_high")
        now = datetime.now(UTC)
        await raise_alerts(minor, ["pi-1"], WARD, now)
        await raise_alerts(critical, ["pi-2"], "Phường 2", now)
        await raise_alerts(quiet, ["pi-3"], WARD, now)
        await Notifier(settings).tick(now)

        assert [verified(hook, secret, i)["data"]["events"][0]["alert"]["device_id"]
                for i in range(len(hook.calls))] == ["pi-2"]
        assert mailbox.received == []  # the e-mail channel is disabled
        assert await AlertEvent.filter(notify="done").count() == 3
        assert await Notification.all().count() == 1


async def test_a_failing_receiver_costs_one_attempt_a_tick(tmp_path: Path, mailbox: Mailbox, hook: Hook) -> None:
    settings = settings_for(f"sqlite://{tmp_path / 'f.sqlite3'}", mailbox)
    async with opened(settings):
        secret = webhook_sign.new_secret()
        await channels.create(name="ioc-hook", kind="webhook", target={"url": hook.url}, secret=secret, by="t")
        rule = await a_rule("fps low", ["ioc-hook"], kind="camera_fps_low")
        notifier = Notifier(settings)
        hook.statuses[:] = [502]
        t0 = datetime.now(UTC)
        await raise_alerts(rule, ["cam-1", "cam-2", "cam-3"], WARD, t0)
        await notifier.tick(t0)
        assert len(hook.calls) == 1  # the first failed: the channel's other two wait for the next tick
        rows = await Notification.all().order_by("id")
        assert [(n.state, n.attempts, n.next_try_at) for n in rows] == [
            ("pending", 1, t0 + timedelta(seconds=30)), ("pending", 0, t0), ("pending", 0, t0)]
        await notifier.tick(t0 + timedelta(seconds=5))
        await notifier.tick(t0 + timedelta(seconds=30))
        assert len(hook.calls) == 4
        assert [n.state for n in await Notification.all()] == ["sent"] * 3
        told = sorted(verified(hook, secret, i)["data"]["events"][0]["alert"]["device_id"] for i in (1, 2, 3))
        assert told == ["cam-1", "cam-2", "cam-3"]


def test_an_smtp_password_needs_starttls_off_loopback() -> None:
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="STARTTLS"):
        Settings(smtp_host="mail.example.org", smtp_user="fleet", smtp_password=PASSWORD, smtp_starttls=False)
    with pytest.raises(ValidationError, match="without FLEET_SMTP_USER"):
        Settings(smtp_host="mail.example.org", smtp_password=PASSWORD)
    assert Settings(smtp_host="127.0.0.1", smtp_user="fleet", smtp_password=PASSWORD, smtp_starttls=False).smtp_user


async def test_a_ward_losing_power_through_the_alert_engine(tmp_path: Path, mailbox: Mailbox, hook: Hook) -> None:
    """The alert engine (fleet/ops/engine.py) raises the builtin `offline` rule on 200 street lights of
    one ward that died together; the notifier's next tick sends one e-mail and one webhook call."""
    from fleet.ingest.silence import unix_ms
    from fleet.liveness import Hearing, Timing
    from fleet.models import Device, DeviceStatus
    from fleet.ops.engine import AlertEngine
    from fleet.ops.models import AlertRule

    settings = settings_for(f"sqlite://{tmp_path / 'f.sqlite3'}", mailbox)
    async with opened(settings):
        _, _, secret = await both_channels(hook)
        engine = AlertEngine(hearing=lambda: Hearing(timedelta(days=30)), timing=Timing())
        notifier = Notifier(settings)
        t0 = datetime.now(UTC) - timedelta(minutes=10)
        lights = [f"light-{n:03d}" for n in range(200)]
        for light in lights:
            await Device.create(id=light, kind="esp32", ward=WARD, status=DeviceStatus.ACTIVE, online=True, session=1,
                                last_seen_at=t0, last_seen_ms=unix_ms(t0), health_period_s=60, roles=["light"],
                                last_health={}, last_health_at=t0, birth={"kind": "esp32"})
        await engine.tick(t0)  # makes the builtin rules; all online
        await AlertRule.filter(name="offline").update(channels=["ioc-hook", "ops-mail"])
        await notifier.tick(t0)
        assert hook.calls == [] and mailbox.received == []

        died = t0 + timedelta(seconds=5)
        await Device.filter(id__in=lights).update(online=False, last_death_at=died, last_death_reason="lost")
        later = died + timedelta(seconds=301)  # past the rule's for_s
        await engine.tick(later)
        await notifier.tick(later)
        assert len(hook.calls) == 1 and len(mailbox.received) == 1
        document = verified(hook, secret)
        assert document["type"] == "alert.digest" and document["data"]["wards"] == [{"ward": WARD, "count": 200}]
        assert sorted(e["alert"]["device_id"] for e in document["data"]["events"]) == lights
        assert {e["alert"]["kind"] for e in document["data"]["events"]} == {"offline"}
        assert f"{WARD} (200)" in mailbox.received[0].get_content()
