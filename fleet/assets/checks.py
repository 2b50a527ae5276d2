"""The checks at the pole (docs/assets.md, "Checks at the pole"): one verdict per item, pass, warn or
fail, with a line a technician reads. Pure: the facts come in as plain values (fleet/assets/check_run.py
reads them from the database), so every rule is a unit test.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

RSSI_PASS_DBM = -75  # at or above: a link that holds
RSSI_WARN_DBM = -85  # from here up to RSSI_PASS_DBM: it works, but move the antenna if you can; below: fail
HEALTH_PERIODS = 2  # the last health must be at most this many health periods old
LAMP_MIN_MA = 50  # the light role's own threshold (firmware lamp_min_ma default): below it, no lamp burns
LAMP_V = 230  # mains, as the light role counts energy (lamp_v default)
LAMP_MAX_FACTOR = 1.5  # a lamp at full level may draw up to 1.5x its rated current (ballast, start-up)
SENSOR_RECENT = timedelta(hours=1)  # the sensor node sends what changes: a reading in the last hour
# plausible ranges of the sensor role's readings; a key not here only has to be a finite number
SENSOR_RANGES: dict[str, tuple[float, float]] = {
    "temp_c": (-40.0, 85.0), "rh": (0.0, 100.0), "pm25": (0.0, 1000.0), "pm10": (0.0, 1000.0)}


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"  # not proven either way yet (waiting for a reading), or working but weak
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Item:
    item: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status.value.upper()} {self.item}: {self.detail}"


def online(state: str, reason: str | None) -> Item:
    if state == "online":
        return Item("online", Status.PASS, "online")
    why = f" ({reason})" if reason else ""
    return Item("online", Status.FAIL, f"{state}{why}")


def rssi(health: dict[str, Any] | None) -> Item:
    value = (health or {}).get("rssi")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return Item("rssi", Status.WARN, "no RSSI in the last health report")
    if value >= RSSI_PASS_DBM:
        return Item("rssi", Status.PASS, f"{value:g} dBm (>= {RSSI_PASS_DBM})")
    if value >= RSSI_WARN_DBM:
        return Item("rssi", Status.WARN, f"{value:g} dBm: weak (pass from {RSSI_PASS_DBM})")
    return Item("rssi", Status.FAIL, f"{value:g} dBm: too weak (below {RSSI_WARN_DBM})")


def firmware(reported: str | None, target: str | None) -> Item:
    if not reported:
        return Item("firmware", Status.FAIL, "no firmware version reported")
    if target is None:
        return Item("firmware", Status.PASS, f"{reported} (no rollout names a target for this device)")
    if reported == target:
        return Item("firmware", Status.PASS, f"{reported} (the rollout's target)")
    return Item("firmware", Status.FAIL, f"{reported}, the rollout's target is {target}")


def last_health(at: datetime | None, period_s: int, now: datetime) -> Item:
    if at is None:
        return Item("last_health", Status.FAIL, "no health report yet")
    age = (now - at).total_seconds()
    limit = HEALTH_PERIODS * period_s
    if age <= limit:
        return Item("last_health", Status.PASS, f"{max(age, 0):.0f} s ago (within {limit} s)")
    return Item("last_health", Status.FAIL, f"{age:.0f} s ago (more than {HEALTH_PERIODS} periods of {period_s} s)")


def lamp_window(lamp_w: float | None) -> tuple[float, float | None]:
    """The current a burning lamp may draw (mA): from the role's threshold up to its rating x 1.5
    (None: the asset does not say its wattage, no upper bound)."""
    if lamp_w is None or lamp_w <= 0:
        return LAMP_MIN_MA, None
    return LAMP_MIN_MA, lamp_w / LAMP_V * 1000 * LAMP_MAX_FACTOR


def lamp(readings: dict[str, Any] | None, lamp_w: float | None, failure_open: bool) -> Item:
    """The light role's last telemetry: a lamp on draws current within the window, off draws ~0."""
    if failure_open:
        return Item("lamp", Status.FAIL, "the device reports a lamp failure (no current while on)")
    if not readings:
        return Item("lamp", Status.WARN, "no lamp reading yet")
    level, ma = readings.get("level"), readings.get("ma")
    if not isinstance(ma, int | float) or not math.isfinite(ma):
        return Item("lamp", Status.WARN, "the last reading has no lamp current")
    low, high = lamp_window(lamp_w)
    if isinstance(level, int) and level > 0:
        if ma < low:
            return Item("lamp", Status.FAIL, f"on at level {level} but drawing {ma:g} mA (at least {low:g} expected)")
        if high is not None and ma > high:
            return Item("lamp", Status.FAIL, f"on at level {level}, drawing {ma:g} mA: more than a "
                                             f"{lamp_w:g} W lamp should ({high:.0f} mA)")
        return Item("lamp", Status.PASS, f"on at level {level}, {ma:g} mA")
    if ma >= low:
        return Item("lamp", Status.FAIL, f"off but drawing {ma:g} mA (a stuck relay?)")
    return Item("lamp", Status.PASS, f"off, {ma:g} mA")


def lamp_test(command: dict[str, Any] | None, settled: dict[str, Any] | None, lamp_w: float | None,
              failure_open: bool) -> Item | None:
    """The last install-time lamp test: its command's answer, then a reading taken once the lamp
    settled after it. None: no test was run."""
    if command is None:
        return None
    status = command["status"]
    if status == "sent":
        return Item("lamp_test", Status.WARN, "the lamp-on command is on its way; no answer yet")
    if status != "ok":
        return Item("lamp_test", Status.FAIL, f"the device answered the lamp-on command: {status} "
                                               f"{command.get('detail') or ''}".rstrip())
    if failure_open:
        return Item("lamp_test", Status.FAIL, "lamp on, but the device reports no current (lamp failure)")
    if settled is None:
        return Item("lamp_test", Status.WARN, "lamp on; waiting for its settled current")
    verdict = lamp(settled, lamp_w, False)
    if verdict.status is Status.PASS and not (isinstance(settled.get("level"), int) and settled["level"] > 0):
        return Item("lamp_test", Status.FAIL, "the lamp did not turn on: " + verdict.detail)
    return Item("lamp_test", verdict.status, verdict.detail)


def tone_test(command: dict[str, Any] | None, playback: list[dict[str, Any]]) -> Item | None:
    """The last install-time test tone: its command's answer, then its `playback` events
    ({"phase", "data"}) in order. None: no test was run."""
    if command is None:
        return None
    if command["status"] == "sent":
        return Item("tone_test", Status.WARN, "the test-tone command is on its way; no answer yet")
    if command["status"] != "ok":
        return Item("tone_test", Status.FAIL, f"the device answered the test-tone command: {command['status']} "
                                               f"{command.get('detail') or ''}".rstrip())
    for event in reversed(playback):
        data = event.get("data") or {}
        if data.get("status") == "completed":
            return Item("tone_test", Status.PASS, "the test tone played to its end")
        if data.get("status") == "failed":
            return Item("tone_test", Status.FAIL, f"the test tone failed: {data.get('reason', 'no reason given')}")
    if playback:
        return Item("tone_test", Status.WARN, "the test tone is playing")
    return Item("tone_test", Status.WARN, "no playback event yet")


def sensor(readings: dict[str, Any] | None, at: datetime | None, now: datetime) -> Item:
    if not readings or at is None:
        return Item("sensor", Status.WARN, "no sensor reading yet")
    if now - at > SENSOR_RECENT:
        return Item("sensor", Status.WARN, f"the last reading is {(now - at).total_seconds() / 60:.0f} min old")
    shown = []
    for key, value in sorted(readings.items())[:12]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            return Item("sensor", Status.FAIL, f"{key} is not a number")
        low, high = SENSOR_RANGES.get(key, (-math.inf, math.inf))
        if not low <= value <= high:
            return Item("sensor", Status.FAIL, f"{key} {value:g} is outside {low:g}..{high:g}")
        shown.append(f"{key} {value:g}")
    if not shown:
        return Item("sensor", Status.WARN, "the last reading has no numbers")
    return Item("sensor", Status.PASS, ", ".join(shown))


def overall(items: list[Item]) -> Status:
    statuses = {i.status for i in items}
    if Status.FAIL in statuses:
        return Status.FAIL
    return Status.WARN if Status.WARN in statuses else Status.PASS
