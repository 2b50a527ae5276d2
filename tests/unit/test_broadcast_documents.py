"""The speaker-document builder (fleet/broadcast/documents.py) and the ward volume profiles
(volumes.py): pure rules, no database. Every document built here is also checked by the Pi role's
own schedule check (edge/roles/speaker_schedule.py), which has the ESP32 node's bounds."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.roles.speaker_schedule import check
from fleet.broadcast.documents import (
    ENTRIES_MAX,
    GRACE,
    NORMAL_MAX,
    ClipRef,
    EmergencyView,
    Program,
    SpeakerInfo,
    build,
    clip_name,
    entry_id,
)
from fleet.broadcast.models import Level
from fleet.broadcast.schedule import QuietHours, Timing, check_rrule
from fleet.broadcast.volumes import DEFAULT_VOLUME, VolumeError, check_steps, volume_at

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # 07:00 in Ho Chi Minh City
ESP = SpeakerInfo("spk-1", "esp32", "tan-phu", frozenset({"market"}))
PI = SpeakerInfo("spk-2", "pi", "tan-phu")
CLIP = ClipRef("ab" * 32, 64_000, "http://fleet/audio/files/" + "ab" * 32 + "?t=x")
OTHER_CLIP = ClipRef("cd" * 32, 32_000, "http://fleet/audio/files/" + "cd" * 32 + "?t=y")
MINUTE = timedelta(minutes=1)


def program(pid: int, start_local: str, *, rrule: str = "", level: Level = Level.NORMAL, order: int = 100,
            seconds: int = 30, clip: ClipRef = CLIP, days: int = 8, **extra: object) -> Program:
    timing = Timing(datetime.fromisoformat(start_local), HCM, check_rrule(rrule))
    occurrences = timing.occurrences(NOW - timedelta(days=2), NOW + timedelta(days=days), 500)
    return Program(pid, 1, level, order, timedelta(seconds=seconds), occurrences, clip, f"b{pid}",
                   **extra)  # type: ignore[arg-type]


def doc_of(speaker: SpeakerInfo, *programs: Program, now: datetime = NOW, **kw: object):  # type: ignore[no-untyped-def]
    built = build(speaker, list(programs), now, tz=HCM, quiet=kw.pop("quiet", {}), **kw)  # type: ignore[arg-type]
    check(built.doc)  # what the nodes accept
    return built


def test_an_esp32_document_has_one_off_entries_with_the_fixed_names() -> None:
    built = doc_of(ESP, program(7, "2026-12-01T08:00", rrule="FREQ=DAILY"), program(8, "2026-12-02T09:15:30",
                                                                                      clip=OTHER_CLIP))
    doc = built.doc
    assert doc["tz_min"] == 420 and doc["volume"] == DEFAULT_VOLUME and "clips" not in doc
    first = doc["schedule"][0]
    start = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert first == {"id": f"b7.{int(start.timestamp())}", "clip": "c" + "ab" * 12, "at": int(start.timestamp()) * 1000}
    assert len(first["id"]) <= 32 and clip_name(CLIP.sha256) == first["clip"]
    # of the 7 daily occurrences within the 7 days (the 8th starts at the horizon) and the one-off,
    # the ESP32 gets the nearest 3 (its heap), refreshed once the second has started
    assert [e["id"].split(".")[0] for e in doc["schedule"]] == ["b7", "b7", "b8"]
    assert [e["at"] for e in doc["schedule"]] == sorted(e["at"] for e in doc["schedule"])
    assert built.skipped == [] and len(built.cut) == 5
    assert built.refresh_at == min(NOW + timedelta(days=1), built.entries[1].at + timedelta(milliseconds=1))
    # a Pi gets them all; nothing cut: recomputed daily as the horizon slides
    pi = doc_of(PI, program(7, "2026-12-01T08:00", rrule="FREQ=DAILY"), program(8, "2026-12-02T09:15:30",
                                                                                 clip=OTHER_CLIP))
    assert [e["id"].split(".")[0] for e in pi.doc["schedule"]] == ["b7", "b7", "b8"] + ["b7"] * 5
    assert pi.cut == [] and pi.refresh_at == NOW + timedelta(days=1)


def test_the_window_keeps_an_entry_within_the_grace_and_drops_older_and_beyond_the_horizon() -> None:
    hourly = program(1, "2026-11-30T07:00", rrule="FREQ=HOURLY;INTERVAL=12")
    ats = [e.at for e in doc_of(PI, hourly).entries]
    assert ats[0] == NOW  # exactly now: in
    later = doc_of(PI, hourly, now=NOW + GRACE - timedelta(seconds=1))
    assert later.entries[0].at == NOW  # still within the nodes' 2 min grace
    gone = doc_of(PI, hourly, now=NOW + GRACE)
    assert gone.entries[0].at == NOW + timedelta(hours=12)
    assert max(ats) < NOW + timedelta(days=7) and len(ats) == 14
    assert len(doc_of(PI, hourly, horizon=timedelta(days=1)).entries) == 2


def test_conflicts_resolved_as_at_scheduling_time_level_order_older() -> None:
    news = program(1, "2026-12-01T08:00", seconds=120)
    alert = program(2, "2026-12-01T08:01", level=Level.PRIORITY)
    built = doc_of(ESP, news, alert)
    assert [e.broadcast_id for e in built.entries] == [2]
    assert [(s.broadcast_id, s.reason, s.winner_id) for s in built.skipped] == [(1, "conflict: b2 wins (level)", 2)]
    # same level: the lower order wins, then the older (lower id)
    early = program(3, "2026-12-01T08:01", order=5)
    assert [(s.broadcast_id, s.reason) for s in doc_of(ESP, news, early).skipped] == [(1, "conflict: b3 wins (order)")]
    twin = program(4, "2026-12-01T08:01")
    assert [(s.broadcast_id, s.reason) for s in doc_of(ESP, twin, news).skipped] == [(4, "conflict: b1 wins (older)")]
    # touching is not overlapping
    after = program(5, "2026-12-01T08:02")
    assert doc_of(ESP, news, after).skipped == []


def test_pairwise_resolution_a_loser_still_beats_a_third() -> None:
    # 1 beats 2 by level, 2 beats 3 by level: both 2 and 3 lose (each pair as conflicts.py says)
    top = program(1, "2026-12-01T08:00", level=Level.EMERGENCY, seconds=60, created_at=NOW - timedelta(days=1))
    mid = program(2, "2026-12-01T08:00:30", level=Level.PRIORITY, seconds=60)
    low = program(3, "2026-12-01T08:01:10", seconds=60)
    built = doc_of(ESP, top, mid, low)
    assert sorted((s.broadcast_id, s.winner_id) for s in built.skipped) == [(2, 1), (3, 2)]
    assert [(e.broadcast_id, e.emergency) for e in built.entries] == [(1, True)]


def test_quiet_hours_skip_normal_occurrences_only() -> None:
    quiet = {"tan-phu": QuietHours.parse("22:00", "05:00")}
    night = program(1, "2026-12-01T23:00")
    loud = program(2, "2026-12-01T23:30", level=Level.PRIORITY)
    built = doc_of(ESP, night, loud, quiet=quiet)
    assert [s.reason for s in built.skipped] == ["quiet hours"] and built.skipped[0].broadcast_id == 1
    assert [e.broadcast_id for e in built.entries] == [2]
    # another ward's quiet hours do not apply
    assert [e.broadcast_id for e in doc_of(ESP, night, quiet={"other": quiet["tan-phu"]}).entries] == [1]


def test_a_pi_gets_at_most_30_normal_entries_and_32_in_all_and_the_refresh_before_they_run_out() -> None:
    hourly = program(1, "2026-12-01T07:30", rrule="FREQ=HOURLY")
    built = doc_of(PI, hourly)
    assert len(built.entries) == NORMAL_MAX and len(built.cut) == 7 * 24 - NORMAL_MAX
    ats = [e.at for e in built.entries]
    assert ats == [NOW + timedelta(minutes=30) + timedelta(hours=h) for h in range(NORMAL_MAX)]
    # 30 hourly entries reach 29.5 h ahead: refreshed before the last is less than a day ahead
    assert built.refresh_at == ats[-1] - timedelta(days=1)
    # 25 hourly ones and a daily one: 32 in the horizon, 30 sent; refreshed when the 23rd has passed (7 left)
    burst = Timing(datetime(2026, 12, 1, 7, 30), HCM, check_rrule("FREQ=HOURLY"), count=25)
    dense = Program(3, 1, Level.NORMAL, 100, timedelta(seconds=30),
                    burst.occurrences(NOW, NOW + timedelta(days=8), 500), CLIP)
    mixed = doc_of(PI, dense, program(4, "2026-12-01T09:00", rrule="FREQ=DAILY"))
    assert len(mixed.cut) == 2 and len(mixed.entries) == NORMAL_MAX
    assert mixed.refresh_at == mixed.entries[NORMAL_MAX - 8].at + timedelta(milliseconds=1) < NOW + timedelta(days=1)
    # nothing cut: the daily slide of the horizon only
    assert doc_of(PI, program(1, "2026-12-01T07:30", rrule="FREQ=DAILY")).refresh_at == NOW + timedelta(days=1)
    siren = program(2, "2026-12-01T07:40", level=Level.EMERGENCY, seconds=5, created_at=NOW - timedelta(days=1),
                    rrule="FREQ=HOURLY")
    both = doc_of(PI, hourly, siren)
    assert len(both.doc["schedule"]) == ENTRIES_MAX
    assert sum(1 for e in both.doc["schedule"] if e.get("emergency")) == 2  # the two kept for emergencies
    assert sum(1 for e in both.entries if not e.emergency) == NORMAL_MAX
    # a refresh a day later gives the next 30
    moved = doc_of(PI, hourly, now=built.refresh_at)
    assert moved.entries[0].at >= built.refresh_at - GRACE and len(moved.entries) == NORMAL_MAX


def test_an_esp32_gets_the_3_nearest_and_one_emergency_refreshed_before_fewer_than_2_remain() -> None:
    hourly = program(1, "2026-12-01T07:30", rrule="FREQ=HOURLY")
    built = doc_of(ESP, hourly)
    ats = [e.at for e in built.entries]
    assert ats == [NOW + timedelta(minutes=30) + timedelta(hours=h) for h in range(3)]
    assert len(built.doc["schedule"]) == 3 and len(built.cut) == 7 * 24 - 3
    # refreshed just after the second of the three has started: one still ahead
    assert built.refresh_at == ats[1] + timedelta(milliseconds=1)
    siren = program(2, "2026-12-01T07:40", level=Level.EMERGENCY, seconds=5, created_at=NOW - timedelta(days=1))
    both = doc_of(ESP, hourly, siren)
    assert [e.emergency for e in both.entries].count(True) == 1 and len(both.doc["schedule"]) == 4
    # the document the node gets is within what its heap holds (docs/broadcasts.md)
    assert len(json.dumps(both.doc)) < 600


def test_emergency_entries_follow_the_dispatch_and_the_grace() -> None:
    start = NOW
    until = NOW + timedelta(minutes=30)

    def emergency(**extra: object) -> Program:
        fields: dict[str, object] = {"created_at": NOW, "in_force_until": until}
        fields.update(extra)
        return program(9, "2026-12-01T07:00", level=Level.EMERGENCY, seconds=20, **fields)

    def entries(now: datetime, view: EmergencyView, **extra: object) -> list[tuple[datetime, bool]]:
        return [(e.at, e.emergency) for e in doc_of(ESP, emergency(**extra), now=now, emergency=view).entries]

    soon = NOW + timedelta(seconds=40)
    # the command is out (sent, acked, waiting for the clip): not in the document, never both
    for state in ("sent", "acked", "waiting_clip"):
        assert entries(soon, EmergencyView({9: state})) == []
    # no answer: fallback to the desired state, at its start while within the nodes' grace
    assert entries(soon, EmergencyView({9: "fallback"})) == [(start, True)]
    assert doc_of(ESP, emergency(), now=soon, emergency=EmergencyView({9: "fallback"})).doc["schedule"][0][
        "emergency"] is True
    # after the grace: only for a speaker back since then (its birth), at that time; not once played
    late = NOW + timedelta(minutes=10)
    assert entries(late, EmergencyView({9: "fallback"})) == []
    back = NOW + timedelta(minutes=9, seconds=30, microseconds=123456)
    assert entries(late, EmergencyView({9: "fallback"}, back)) == [(back.replace(microsecond=123000), True)]
    played = EmergencyView({9: "fallback"}, back, frozenset({entry_id(9, start)}))
    assert entries(late, played) == []
    # a birth within the grace: the node had the entry at its start already
    assert entries(late, EmergencyView({9: "fallback"}, NOW + timedelta(minutes=1))) == []
    # no longer in force: out
    assert entries(until, EmergencyView({9: "fallback"}, back)) == []
    # no dispatch row: only once the broadcast is not new (the emergency path writes its rows first)
    assert entries(NOW + timedelta(seconds=10), EmergencyView()) == []
    assert entries(NOW + timedelta(seconds=31), EmergencyView()) == [(start, True)]
    young = doc_of(ESP, emergency(), now=NOW + timedelta(seconds=10), emergency=EmergencyView())
    assert young.refresh_at == NOW + timedelta(seconds=30)  # looked at again when it is no longer new
    fallback = doc_of(ESP, emergency(), now=soon, emergency=EmergencyView({9: "fallback"}))
    assert fallback.refresh_at == start + GRACE  # then rewritten or left out


def test_a_scheduled_emergency_without_in_force_plays_at_its_time() -> None:
    drill = program(3, "2026-12-03T09:00", level=Level.EMERGENCY, created_at=NOW - timedelta(hours=1))
    built = doc_of(PI, drill)
    assert [(e.at, e.emergency) for e in built.entries] == [(datetime(2026, 12, 3, 2, 0, tzinfo=UTC), True)]


def test_volume_per_entry_on_the_pi_and_the_next_entrys_on_the_esp32() -> None:
    steps = check_steps([{"from": "21:00", "volume": 30}, {"from": "06:00", "volume": 80}])
    morning = program(1, "2026-12-01T08:00")
    night = program(2, "2026-12-01T22:00", clip=OTHER_CLIP)
    pi = doc_of(PI, morning, night, volume_steps=steps)
    assert [(e["volume"]) for e in pi.doc["schedule"]] == [80, 30]
    assert pi.doc["volume"] == 80
    assert pi.doc["clips"] == [{"name": CLIP.name, "url": CLIP.url, "sha256": CLIP.sha256, "bytes": CLIP.bytes},
                               {"name": OTHER_CLIP.name, "url": OTHER_CLIP.url, "sha256": OTHER_CLIP.sha256,
                                "bytes": OTHER_CLIP.bytes}]
    esp = doc_of(ESP, night, volume_steps=steps)
    assert esp.doc["volume"] == 30 and "volume" not in esp.doc["schedule"][0] and "clips" not in esp.doc
    # nothing scheduled: the volume of now
    assert doc_of(ESP, volume_steps=steps).doc == {"volume": 80, "tz_min": 420, "schedule": []}


def test_volume_profiles() -> None:
    steps = check_steps([{"from": "22:00", "volume": 20}, {"from": "06:30", "volume": 90}])
    assert steps[0]["from"] == "06:30"
    at = datetime(2026, 12, 1)
    assert volume_at(steps, at.replace(hour=6, minute=29)) == 20  # before the day's first step: the last one
    assert volume_at(steps, at.replace(hour=6, minute=30)) == 90
    assert volume_at(steps, at.replace(hour=23)) == 20
    assert volume_at(None, at) == DEFAULT_VOLUME
    for bad, words in (([], "at least one"), ([{"from": "24:00", "volume": 5}], "HH:MM"),
                       ([{"from": "06:00", "volume": 101}], "0 to 100"),
                       ([{"from": "06:00", "volume": True}], "0 to 100"),
                       ([{"from": "06:00", "volume": 5}, {"from": "06:00", "volume": 6}], "twice"),
                       ([{"volume": 5}], "HH:MM")):
        with pytest.raises(VolumeError, match=words):
            check_steps(bad)


def test_targets_and_a_clip_missing_for_the_kind() -> None:
    assert ESP.targeted_by({"wards": ["tan-phu"]}) and ESP.targeted_by({"tags": ["market"]})
    assert ESP.targeted_by({"devices": ["spk-1"]}) and not ESP.targeted_by({"wards": ["x"], "tags": ["y"]})
    gone = Program(1, 1, Level.NORMAL, 100, timedelta(seconds=5),
                   program(1, "2026-12-01T08:00").occurrences, None)
    assert doc_of(ESP, gone).entries == []
