"""The checks at the pole, from what the fleet stores (docs/assets.md, "Checks at the pole"), and the
install-time tests a technician may send: lamp on for a while, a test tone. The verdicts are
fleet/assets/checks.py's; this module only reads the facts and sends the commands.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contract import make_command
from fleet.assets import checks
from fleet.assets.models import Asset
from fleet.ingest.silence import LivenessView
from fleet.models import AuditEntry, Command, Device, EventRecord, TelemetryRecord
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.states import RolloutStatus

TEST_PREFIX = "install-"  # the install tests' command ids (and broadcast ids): how the check finds them
LAMP_TEST_MAX_S = 60  # the lamp stays on at most this long for a test
TEST_TTL_S = 30  # a test command not delivered within this long is dropped by the device
TESTS_PER_MINUTE = 3  # per device (all fleet instances: counted in the audit table); the next is a 429
TEST_TONE_CLIP = "test_tone"  # the clip the speaker plays (kept on the speaker like any clip)
TEST_TONE_VOLUME = 60
TEST_RECENT = timedelta(minutes=10)  # a test older than this no longer shows in the check
# the light role sends its settled reading SETTLE_MS (3 s) after an override, and a reading at once
# when the level changes (with the current from before): a reading received 2 s or more after the
# answer is the settled one (1 s of the role's evaluation tick left as a margin)
SETTLED_AFTER_S = 2
AUDIT_ACTION = "device.install_test"


class TestRefused(Exception):
    """The test cannot be sent to this device (wrong role, offline, decommissioned)."""


class TooManyTests(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"at most {TESTS_PER_MINUTE} install tests per device per minute; "
                         f"try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class TestCommand:
    command: Command
    topic: str
    payload: bytes


def _row(command: Command | None) -> dict[str, Any] | None:
    return None if command is None else {"status": command.status, "detail": command.detail}


async def target_version(device_id: str) -> str | None:
    """The release of the newest live or finished rollout that holds the device (None: none does)."""
    row = await RolloutDevice.filter(
        device_id=device_id, rollout__status__in=[RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.DONE],
    ).order_by("-rollout_id").first()
    if row is None:
        return None
    rollout = await Rollout.get(id=row.rollout_id).prefetch_related("release")
    return str(rollout.release.version)


async def _last_test(device_id: str, name: str, now: datetime) -> Command | None:
    return await Command.filter(device_id=device_id, name=name, id__startswith=TEST_PREFIX,
                                created_at__gte=now - TEST_RECENT).order_by("-created_at").first()


async def _failure_open(device_id: str) -> bool:
    last = await EventRecord.filter(device_id=device_id, type="lamp_failure").order_by("-id").first()
    return last is not None and last.phase == "start"


async def _light_items(device: Device, now: datetime) -> list[checks.Item]:
    asset = await Asset.get_or_none(device_id=device.id)
    lamp_w = (asset.attributes or {}).get("lamp_w") if asset is not None else None
    lamp_w = float(lamp_w) if isinstance(lamp_w, int | float) and not isinstance(lamp_w, bool) else None
    last = await TelemetryRecord.filter(device_id=device.id, role="light").order_by("-id").first()
    failure = await _failure_open(device.id)
    items = [checks.lamp(last.readings if last else None, lamp_w, failure)]
    command = await _last_test(device.id, "light.override", now)
    settled = None
    if command is not None and command.status == "ok" and command.answered_at is not None:
        since = command.answered_at + timedelta(seconds=SETTLED_AFTER_S)
        after = await TelemetryRecord.filter(device_id=device.id, role="light",
                                             received_at__gte=since).order_by("id").first()
        settled = after.readings if after is not None else None
        failure = failure and await EventRecord.filter(
            device_id=device.id, type="lamp_failure", phase="start", received_at__gte=command.created_at).exists()
    test = checks.lamp_test(_row(command), settled, lamp_w, failure)
    if test is not None:
        items.append(test)
    return items


async def _speaker_items(device: Device, now: datetime) -> list[checks.Item]:
    command = await _last_test(device.id, "speaker.broadcast", now)
    if command is None:
        return [checks.Item("tone_test", checks.Status.WARN, "not run yet (run the test tone)")]
    events = await EventRecord.filter(device_id=device.id, type="playback",
                                      received_at__gte=command.created_at).order_by("id").limit(50)
    mine = [{"phase": e.phase, "data": e.data} for e in events
            if isinstance(e.data, dict) and e.data.get("broadcast") == command.id]
    item = checks.tone_test(_row(command), mine)
    return [item] if item is not None else []


async def _sensor_items(device: Device, now: datetime) -> list[checks.Item]:
    last = await TelemetryRecord.filter(device_id=device.id, role="sensor").order_by("-id").first()
    return [checks.sensor(last.readings if last else None, last.received_at if last else None, now)]


async def run_check(device: Device, view: LivenessView, now: datetime | None = None) -> list[checks.Item]:
    """Every item for this device: presence, RSSI, firmware, last health, then one or two per role."""
    now = now or datetime.now(UTC)
    verdict = view.judge(device)
    items = [
        checks.online(verdict.state.value, verdict.reason.value if verdict.reason else None),
        checks.rssi(device.last_health),
        checks.firmware(device.fw or (device.last_health or {}).get("fw"), await target_version(device.id)),
        checks.last_health(device.last_health_at, int(device.health_period_s), now),
    ]
    roles = set(device.roles or [])
    if "light" in roles:
        items += await _light_items(device, now)
    if "speaker" in roles:
        items += await _speaker_items(device, now)
    if "sensor" in roles:
        items += await _sensor_items(device, now)
    return items


async def admit_test(device_id: str, now: datetime) -> None:
    """TooManyTests if the device had TESTS_PER_MINUTE tests in the last minute (any fleet instance)."""
    recent = AuditEntry.filter(action=AUDIT_ACTION, target=device_id, at__gte=now - timedelta(minutes=1))
    if await recent.count() >= TESTS_PER_MINUTE:
        oldest = await recent.order_by("at").first()
        wait = 60 - (now - oldest.at).total_seconds() if oldest is not None else 60
        raise TooManyTests(max(1, int(wait) + 1))


async def make_test(device: Device, action: str, seconds: int) -> TestCommand:
    """The command of one install test, stored as sent (the caller publishes it)."""
    roles = set(device.roles or [])
    command_id = TEST_PREFIX + uuid.uuid4().hex[:24]
    now_ms = int(time.time() * 1000)
    args: dict[str, Any]
    if action == "lamp_on":
        if "light" not in roles:
            raise TestRefused(f"device {device.id!r} has no light role")
        name, args = "light.override", {"level": 100, "until": now_ms + seconds * 1000}
    else:
        if "speaker" not in roles:
            raise TestRefused(f"device {device.id!r} has no speaker role")
        name, args = "speaker.broadcast", {"id": command_id, "clip": TEST_TONE_CLIP, "volume": TEST_TONE_VOLUME}
    expires_ms = now_ms + TEST_TTL_S * 1000
    topic, payload = make_command(device.id, command_id, name, args, expires_ms)
    command = await Command.create(id=command_id, device_id=device.id, name=name, args=args, expires_ms=expires_ms)
    return TestCommand(command, topic, payload)
