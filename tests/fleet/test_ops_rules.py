"""Every rule kind fires and clears, pure (fleet/ops/rules.py): no database, the facts made by hand."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet.liveness import Reason, State, Verdict
from fleet.ops.rules import (
    BUILTINS,
    KINDS,
    UNKNOWN,
    ChildFact,
    Facts,
    Firing,
    OpenEvent,
    RuleError,
    applies,
    check_params,
    default_params,
    evaluate,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ONLINE = Verdict(State.ONLINE, None, NOW)


def facts(health: dict[str, Any] | None = None, verdict: Verdict = ONLINE, **extra: Any) -> Facts:
    return Facts(device_id="d1", kind="pi", roles=["camera"], ward="w", verdict=verdict, offline_since=None,
                 health=health, birth=extra.pop("birth", None), **extra)


def fires(kind: str, fact: Facts, params: dict[str, Any] | None = None) -> Firing:
    outcome = evaluate(kind, check_params(kind, params or {}), fact, NOW)
    assert isinstance(outcome, Firing), outcome
    assert outcome.summary and len(outcome.summary) <= 300
    return outcome


def clear(kind: str, fact: Facts, params: dict[str, Any] | None = None) -> bool:
    return evaluate(kind, check_params(kind, params or {}), fact, NOW) is None


def unknown(kind: str, fact: Facts) -> bool:
    return evaluate(kind, default_params(kind), fact, NOW) is UNKNOWN


OFFLINE = Verdict(State.OFFLINE, Reason.LOST)


def test_offline_for_s() -> None:
    gone = replace(facts(verdict=OFFLINE), offline_since=NOW - timedelta(seconds=301))
    fired = fires("offline", gone)
    assert fired.value == {"since": (NOW - timedelta(seconds=301)).isoformat(), "reason": "lost"}
    assert fired.summary == "offline for 301 s (lost)"
    assert clear("offline", replace(gone, offline_since=NOW - timedelta(seconds=299)))
    assert clear("offline", facts())
    assert unknown("offline", facts(verdict=Verdict(State.UNKNOWN, Reason.FLEET_DISCONNECTED)))
    assert clear("offline", facts(verdict=Verdict(State.NEVER_SEEN)))


def test_stale() -> None:
    late = facts(verdict=Verdict(State.STALE, Reason.OVERDUE, NOW - timedelta(seconds=150)))
    assert fires("stale", late).value == {"quiet_since": (NOW - timedelta(seconds=150)).isoformat()}
    assert clear("stale", facts())
    assert clear("stale", facts(verdict=OFFLINE))  # offline is the offline rule's


@pytest.mark.parametrize(("kind", "field", "bad", "good", "params"), [
    ("temp_high", "temp_c", 85.5, 79, {"max_c": 80}),
    ("disk_high", "disk_pct", 95, 90, {}),
    ("mem_high", "mem_pct", 97.5, 50, {"max_pct": 95}),
    ("heap_low", "heap_free", 3000, 4096, {}),
])
def test_health_thresholds(kind: str, field: str, bad: float, good: float, params: dict[str, Any]) -> None:
    assert fires(kind, facts({field: bad}), params).value[field] == bad
    assert clear(kind, facts({field: good}), params)
    assert clear(kind, facts({}), params)  # a device without the figure
    assert clear(kind, facts({field: True}), params)  # not a number
    assert unknown(kind, facts({field: bad}, verdict=OFFLINE))  # old health: neither fires nor clears


def test_flapping_and_crash_loop_count_in_their_window() -> None:
    flappy = facts(presence_changes={900: 6}, births={900: 3})
    assert fires("flapping", flappy).value == {"changes": 6, "window_s": 900}
    assert clear("flapping", flappy, {"changes": 7})
    assert clear("flapping", flappy, {"window_s": 600})  # no count loaded for that window: none
    assert fires("crash_loop", flappy).value == {"births": 3, "window_s": 900}
    assert clear("crash_loop", facts(births={900: 2}))


def test_safe_mode_from_health_else_birth() -> None:
    assert fires("safe_mode", facts({"mode": "safe"})).value == {"mode": "safe"}
    assert fires("safe_mode", facts({}, birth={"mode": "safe"}))
    assert clear("safe_mode", facts({"mode": "normal"}, birth={"mode": "safe"}))  # the health is newer
    assert clear("safe_mode", facts({}))
    assert unknown("safe_mode", facts({"mode": "safe"}, verdict=OFFLINE))


def test_clock_drift_either_way() -> None:
    assert fires("clock_drift", facts(clock_offset_ms=45_000)).value["offset_ms"] == 45_000
    ahead = fires("clock_drift", facts(clock_offset_ms=-31_000))
    assert "ahead of" in ahead.summary
    assert clear("clock_drift", facts(clock_offset_ms=1_200))
    assert clear("clock_drift", facts(clock_offset_ms=None))  # no clock, or nothing current


@pytest.mark.parametrize(("kind", "event_type"), [("lamp_failure", "lamp_failure"), ("day_burning", "day_burning"),
                                                  ("sensor_alarm", "alarm")])
def test_open_events(kind: str, event_type: str) -> None:
    since = NOW - timedelta(hours=3)
    fired = fires(kind, facts(open_events={event_type: [OpenEvent("e1", since), OpenEvent("e2", NOW)]}))
    assert fired.value["events"] == 2 and fired.value["since"] == since.isoformat()
    assert clear(kind, facts(open_events={"motion": [OpenEvent("m", since)]}))
    assert clear(kind, facts())


def test_camera_stalled_and_fps_low() -> None:
    one = facts({"roles": {"camera": {"fps": 0, "frames": 10}}})
    assert fires("camera_stalled", one).value == {"stalled": ["fps"]}
    assert clear("camera_fps_low", one)  # 0 fps is stalled, not slow
    several = facts({"roles": {"camera": {"gate.fps": 3.5, "lane.fps": 12}}})
    assert fires("camera_fps_low", several).value["fps"] == {"gate.fps": 3.5}
    assert clear("camera_stalled", several)
    assert clear("camera_fps_low", several, {"min_fps": 3})
    assert clear("camera_stalled", facts({"roles": "garbage"}))
    assert unknown("camera_stalled", replace(one, verdict=OFFLINE))


def test_speaker_playback_failures() -> None:
    assert fires("speaker_playback_failed", facts(playback_failures={3600: 3})).value["failures"] == 3
    assert clear("speaker_playback_failed", facts(playback_failures={3600: 2}))


def test_queue_growing_only_while_it_grows() -> None:
    assert fires("queue_growing", facts({"queue": 500}, health_before={600: {"queue": 200}})).value["queue"] == 500
    assert fires("queue_growing", facts({"queue": 500}))  # nothing earlier in the window: above the bound
    assert clear("queue_growing", facts({"queue": 500}, health_before={600: {"queue": 800}}))  # draining
    assert clear("queue_growing", facts({"queue": 50}, health_before={600: {"queue": 10}}))


def test_dropped_rising() -> None:
    assert fires("dropped_rising", facts({"dropped": 12}, health_before={600: {"dropped": 2}})).value["dropped"] == 10
    assert fires("dropped_rising", facts({"dropped": 3}, health_before={600: {"dropped": 40}})).value["dropped"] == 3
    assert clear("dropped_rising", facts({"dropped": 2}, health_before={600: {"dropped": 2}}))
    assert clear("dropped_rising", facts({"dropped": 0}, health_before={600: {"dropped": 40}}))
    assert clear("dropped_rising", facts({"dropped": 5}))  # nothing to compare with


def test_ingest_gaps() -> None:
    assert fires("ingest_gaps", facts(missing={3600: 20})).value["missing"] == 20
    assert clear("ingest_gaps", facts(missing={3600: 9}))


def test_children_kinds_judge_the_children_while_the_pi_is_heard() -> None:
    since = NOW - timedelta(seconds=400)
    kids = [ChildFact("cam-2", False, None, since), ChildFact("cam-1", False, "ok", NOW - timedelta(seconds=10)),
            ChildFact("cam-3", True, "frozen", since), ChildFact("cam-4", True, "no_frames", since),
            ChildFact("cam-5", True, "ok", since)]
    pi = facts(children=kids)
    assert fires("child_offline", pi).value == {"children": ["cam-2"], "count": 1}  # cam-1: not for 300 s yet
    assert fires("child_offline", pi, {"for_s": 0}).value == {"children": ["cam-1", "cam-2"], "count": 2}
    assert fires("child_frozen", pi).value == {"children": ["cam-3"], "count": 1}
    assert fires("child_no_frames", pi).value == {"children": ["cam-4"], "count": 1}
    assert "1 children with a frozen picture: cam-3" in fires("child_frozen", pi).summary
    assert clear("child_offline", facts(children=kids[2:]))
    assert clear("child_frozen", facts(children=[ChildFact("cam-3", False, "frozen", since)]))  # offline, not frozen
    # the Pi not heard: it cannot see its children, nothing to judge by
    assert unknown("child_offline", replace(pi, verdict=OFFLINE))
    assert unknown("child_frozen", replace(pi, verdict=OFFLINE))
    many = facts(children=[ChildFact(f"cam-{i:02d}", False, None, since) for i in range(30)])
    listed = fires("child_offline", many)
    assert listed.value["count"] == 30 and len(listed.value["children"]) == 20 and listed.summary.endswith("…")


def test_every_kind_is_tested_here() -> None:
    tested = {"offline", "stale", "temp_high", "disk_high", "mem_high", "heap_low", "flapping", "crash_loop",
              "safe_mode", "clock_drift", "lamp_failure", "day_burning", "sensor_alarm", "camera_stalled",
              "camera_fps_low", "speaker_playback_failed", "queue_growing", "dropped_rising", "ingest_gaps",
              "child_offline", "child_frozen", "child_no_frames"}
    assert tested == set(KINDS)


def test_params_checked_per_kind() -> None:
    assert check_params("offline", {}) == {"for_s": 300}
    assert check_params("temp_high", {"max_c": 70}) == {"max_c": 70.0}
    for kind, params, says in [("meltdown", {}, "unknown rule kind"), ("temp_high", {"max_c": "hot"}, "max_c"),
                               ("disk_high", {"max_pct": 101}, "max_pct"), ("offline", {"for": 1}, "for"),
                               ("flapping", {"changes": 1.5}, "changes"), ("offline", [], "object")]:
        with pytest.raises(RuleError, match=says):
            check_params(kind, params)


def test_builtins_and_scope() -> None:
    assert len({b.name for b in BUILTINS}) == len(BUILTINS)
    assert {b.kind for b in BUILTINS} == set(KINDS)  # every kind has a default rule
    for builtin in BUILTINS:
        assert check_params(builtin.kind, default_params(builtin.kind)) == default_params(builtin.kind)
    assert applies(None, None, None, "pi", [], "")
    assert applies("esp32", "light", "w", "esp32", ["light"], "w")
    assert not applies("esp32", None, None, "pi", [], "w")
    assert not applies(None, "camera", None, "pi", ["sim"], "w")
    assert not applies(None, None, "other", "pi", [], "w")
