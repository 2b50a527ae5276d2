"""The verdicts of the checks at the pole (fleet/assets/checks.py; docs/assets.md "Checks at the pole"):
each row of the doc's table."""

from datetime import UTC, datetime, timedelta

import pytest

from fleet.assets import checks
from fleet.assets.checks import Status

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
P, W, F = Status.PASS, Status.WARN, Status.FAIL


def test_online() -> None:
    assert checks.online("online", None).status is P
    assert checks.online("offline", "lost") == checks.Item("online", F, "offline (lost)")
    assert checks.online("never_seen", None).status is F


@pytest.mark.parametrize(("rssi", "status"), [(-60, P), (-75, P), (-76, W), (-85, W), (-86, F), (None, W),
                                              (float("nan"), W), (True, W)])
def test_rssi_bands(rssi: object, status: Status) -> None:
    assert checks.rssi({"rssi": rssi}).status is status


def test_rssi_without_health() -> None:
    assert checks.rssi(None).status is W


def test_firmware_against_the_rollout() -> None:
    assert checks.firmware("1.2.0", None).status is P
    assert checks.firmware("1.2.0", "1.2.0").status is P
    assert checks.firmware("1.1.0", "1.2.0") == checks.Item("firmware", F, "1.1.0, the rollout's target is 1.2.0")
    assert checks.firmware(None, None).status is F


def test_last_health_within_two_periods() -> None:
    assert checks.last_health(NOW - timedelta(seconds=120), 60, NOW).status is P
    assert checks.last_health(NOW - timedelta(seconds=121), 60, NOW).status is F
    assert checks.last_health(None, 60, NOW).status is F


@pytest.mark.parametrize(("readings", "lamp_w", "status", "detail"), [
    ({"level": 100, "ma": 300}, 100, P, "on at level 100, 300 mA"),
    ({"level": 100, "ma": 0}, 100, F, "on at level 100 but drawing 0 mA (at least 50 expected)"),
    ({"level": 100, "ma": 700}, 100, F, "on at level 100, drawing 700 mA: more than a 100 W lamp should (652 mA)"),
    ({"level": 100, "ma": 5000}, None, P, "on at level 100, 5000 mA"),  # no wattage: no upper bound
    ({"level": 0, "ma": 2}, 100, P, "off, 2 mA"),
    ({"level": 0, "ma": 300}, 100, F, "off but drawing 300 mA (a stuck relay?)"),
    ({"level": None, "ma": 0}, 100, P, "off, 0 mA"),
    ({"level": 50}, 100, W, "the last reading has no lamp current"),
    (None, 100, W, "no lamp reading yet"),
])
def test_lamp_current_against_level_and_wattage(readings: dict[str, object] | None, lamp_w: float | None,
                                                status: Status, detail: str) -> None:
    assert checks.lamp(readings, lamp_w, False) == checks.Item("lamp", status, detail)


def test_an_open_lamp_failure_fails_the_lamp() -> None:
    assert checks.lamp({"level": 100, "ma": 300}, None, True).status is F


def test_lamp_test() -> None:
    ok = {"status": "ok", "detail": {"overrides": 1}}
    assert checks.lamp_test(None, None, None, False) is None
    assert checks.lamp_test({"status": "sent", "detail": None}, None, None, False).status is W  # type: ignore[union-attr]
    assert checks.lamp_test({"status": "expired", "detail": None}, None, None, False).status is F  # type: ignore[union-attr]
    assert checks.lamp_test(ok, None, None, False).status is W  # type: ignore[union-attr]
    assert checks.lamp_test(ok, {"level": 100, "ma": 300}, 100, False).status is P  # type: ignore[union-attr]
    assert checks.lamp_test(ok, {"level": 100, "ma": 0}, 100, False).status is F  # type: ignore[union-attr]
    assert checks.lamp_test(ok, {"level": 0, "ma": 0}, 100, False).status is F  # type: ignore[union-attr]
    assert checks.lamp_test(ok, None, 100, True).status is F  # type: ignore[union-attr]


def test_tone_test() -> None:
    ok = {"status": "ok", "detail": None}
    assert checks.tone_test(None, []) is None
    assert checks.tone_test({"status": "sent", "detail": None}, []).status is W  # type: ignore[union-attr]
    assert checks.tone_test({"status": "error", "detail": "busy"}, []).status is F  # type: ignore[union-attr]
    assert checks.tone_test(ok, []).status is W  # type: ignore[union-attr]
    started = {"phase": "start", "data": {"status": "started"}}
    assert checks.tone_test(ok, [started]).status is W  # type: ignore[union-attr]
    done = {"phase": "end", "data": {"status": "completed"}}
    assert checks.tone_test(ok, [started, done]).status is P  # type: ignore[union-attr]
    missing = {"phase": "once", "data": {"status": "failed", "reason": "no clip"}}
    assert checks.tone_test(ok, [missing]) == checks.Item("tone_test", F, "the test tone failed: no clip")


@pytest.mark.parametrize(("readings", "age_s", "status"), [
    ({"temp_c": 30.5, "rh": 60}, 60, P),
    ({"temp_c": 30.5}, 3601, W),
    ({"temp_c": 130.0}, 60, F),
    ({"rh": -1}, 60, F),
    ({"pm25": float("inf")}, 60, F),
    ({"other": 1e9}, 60, P),  # a key without a range: finite is enough
    ({"note": "x"}, 60, W),
    (None, 60, W),
])
def test_sensor_reading(readings: dict[str, object] | None, age_s: int, status: Status) -> None:
    assert checks.sensor(readings, NOW - timedelta(seconds=age_s), NOW).status is status


def test_overall_and_lines() -> None:
    items = [checks.Item("a", P, "x"), checks.Item("b", W, "y")]
    assert checks.overall(items) is W
    assert checks.overall([*items, checks.Item("c", F, "z")]) is F
    assert checks.overall(items[:1]) is P
    assert items[1].line() == "WARN b: y"
