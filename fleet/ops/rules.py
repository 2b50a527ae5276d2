"""Alert rule kinds: their parameters, their evaluation, and the builtin rules (docs/ops.md, "Alert rules").

Pure: no database, no framework. The engine (fleet/ops/engine.py) loads one batch of devices and
the facts the batch's rules need (fleet/ops/facts.py) into `Facts`, then asks each rule's kind
whether it fires on each device. An evaluation answers `Firing` (with a one-line summary and the
figures that made it fire), `None` (the condition is clear: a live alert resolves), or `UNKNOWN`
(nothing to judge by: an offline device's health is old; a live alert stays as it is).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.liveness import State, Verdict


class RuleError(ValueError):
    """A rule that cannot be: an unknown kind, bad parameters. The text says what is wrong."""


@dataclass(frozen=True, slots=True)
class Firing:
    summary: str  # one line for people
    value: dict[str, Any]  # the figures that made it fire


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
Outcome = Firing | None | _Unknown


@dataclass(frozen=True, slots=True)
class OpenEvent:
    event_id: str
    since: datetime


@dataclass(frozen=True, slots=True)
class ChildFact:
    """One child device of the judged Pi (fleet/children): what its parent last said."""

    child_id: str
    present: bool | None  # True after a birth, False after a death
    state: str | None  # its last health's `state`: ok, frozen, no_frames
    since: datetime | None  # its death for an absent child, else when `state` last changed


@dataclass(slots=True)
class Facts:
    """What the engine knows about one device at `now`. Windowed facts are keyed by the window in
    seconds (rules of one kind may use different windows)."""

    device_id: str
    kind: str | None
    roles: Sequence[str]
    ward: str
    verdict: Verdict
    offline_since: datetime | None  # when it went offline (a death or the fleet's silent verdict)
    health: Mapping[str, Any] | None  # the last health body
    birth: Mapping[str, Any] | None
    clock_offset_ms: int | None = None  # arrival minus device time of its last health (current stream)
    open_events: dict[str, list[OpenEvent]] = field(default_factory=dict)  # by event type
    presence_changes: dict[int, int] = field(default_factory=dict)  # window -> online<->offline changes
    births: dict[int, int] = field(default_factory=dict)  # window -> births
    playback_failures: dict[int, int] = field(default_factory=dict)  # window -> failed playbacks
    missing: dict[int, int] = field(default_factory=dict)  # window -> seq numbers missing in open gaps
    health_before: dict[int, Mapping[str, Any]] = field(default_factory=dict)  # window -> first health in it
    children: list[ChildFact] = field(default_factory=list)  # its child devices (need "children")

    @property
    def hears(self) -> bool:
        """Its health is current: the device is connected (online, or stale but not yet offline)."""
        return self.verdict.state in (State.ONLINE, State.STALE)


# -- parameters ------------------------------------------------------------------------------

DAY_S = 86_400


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoParams(Params):
    pass


class OfflineParams(Params):
    for_s: int = Field(300, ge=0, le=30 * DAY_S, description="offline at least this long")


class FlappingParams(Params):
    changes: int = Field(6, ge=2, le=1000, description="presence changes (online<->offline) in the window")
    window_s: int = Field(900, ge=60, le=DAY_S)


class TempParams(Params):
    max_c: float = Field(80.0, ge=-40, le=150)


class PctParams(Params):
    max_pct: float = Field(90.0, ge=1, le=100)


class HeapParams(Params):
    min_bytes: int = Field(4096, ge=0, le=16 * 1024 * 1024)


class CrashLoopParams(Params):
    boots: int = Field(3, ge=2, le=1000, description="births in the window")
    window_s: int = Field(900, ge=60, le=DAY_S)


class ClockParams(Params):
    max_ms: int = Field(30_000, ge=100, le=DAY_S * 1000)


class FpsParams(Params):
    min_fps: float = Field(5.0, gt=0, le=1000)


class PlaybackParams(Params):
    failures: int = Field(3, ge=1, le=10_000)
    window_s: int = Field(3600, ge=60, le=7 * DAY_S)


class QueueParams(Params):
    max_queue: int = Field(100, ge=0, le=10_000_000)
    window_s: int = Field(600, ge=60, le=DAY_S, description="rising since the first health in the window")


class WindowParams(Params):
    window_s: int = Field(600, ge=60, le=DAY_S)


class GapParams(Params):
    missing: int = Field(10, ge=1, le=10_000_000, description="messages missing in open gaps found in the window")
    window_s: int = Field(3600, ge=60, le=7 * DAY_S)


# -- evaluation ------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _health_figure(facts: Facts, name: str) -> float | None:
    return _number(facts.health.get(name)) if facts.health else None


def _since(moment: datetime | None, now: datetime) -> str:
    return f"for {int((now - moment).total_seconds())} s" if moment is not None else "for an unknown time"


def offline(facts: Facts, p: OfflineParams, now: datetime) -> Outcome:
    if facts.verdict.state in (State.UNKNOWN, State.NEVER_SEEN, State.DECOMMISSIONED):
        return UNKNOWN if facts.verdict.state is State.UNKNOWN else None
    if facts.verdict.state is not State.OFFLINE:
        return None
    since = facts.offline_since
    if since is not None and (now - since).total_seconds() < p.for_s:
        return None
    reason = facts.verdict.reason.value if facts.verdict.reason else "unknown"
    # the value holds the start, not the duration: it stays the same while the alert is kept
    return Firing(f"offline {_since(since, now)} ({reason})",
                  {"since": since.isoformat() if since else None, "reason": reason})


def stale(facts: Facts, p: NoParams, now: datetime) -> Outcome:
    if facts.verdict.state is State.UNKNOWN:
        return UNKNOWN
    if facts.verdict.state is not State.STALE:
        return None
    quiet = facts.verdict.quiet_since
    return Firing(f"connected but silent {_since(quiet, now)} (health overdue)",
                  {"quiet_since": quiet.isoformat() if quiet else None})


def flapping(facts: Facts, p: FlappingParams, now: datetime) -> Outcome:
    changes = facts.presence_changes.get(p.window_s, 0)
    if changes < p.changes:
        return None
    return Firing(f"{changes} presence changes in {p.window_s} s", {"changes": changes, "window_s": p.window_s})


def crash_loop(facts: Facts, p: CrashLoopParams, now: datetime) -> Outcome:
    births = facts.births.get(p.window_s, 0)
    if births < p.boots:
        return None
    return Firing(f"{births} births in {p.window_s} s", {"births": births, "window_s": p.window_s})


def _above(facts: Facts, name: str, limit: float, unit: str) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    value = _health_figure(facts, name)
    if value is None or value <= limit:
        return None
    return Firing(f"{name} {value:g}{unit} above {limit:g}{unit}", {name: value, "max": limit})


def temp_high(facts: Facts, p: TempParams, now: datetime) -> Outcome:
    return _above(facts, "temp_c", p.max_c, " °C")


def disk_high(facts: Facts, p: PctParams, now: datetime) -> Outcome:
    return _above(facts, "disk_pct", p.max_pct, " %")


def mem_high(facts: Facts, p: PctParams, now: datetime) -> Outcome:
    return _above(facts, "mem_pct", p.max_pct, " %")


def heap_low(facts: Facts, p: HeapParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    value = _health_figure(facts, "heap_free")
    if value is None or value >= p.min_bytes:
        return None
    return Firing(f"heap_free {value:g} bytes below {p.min_bytes}", {"heap_free": value, "min": p.min_bytes})


def safe_mode(facts: Facts, p: NoParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    mode = facts.health.get("mode") if facts.health and "mode" in facts.health else (
        facts.birth.get("mode") if facts.birth else None)
    if mode != "safe":
        return None
    return Firing("running in safe mode (network and update only, no roles)", {"mode": "safe"})


def clock_drift(facts: Facts, p: ClockParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    offset = facts.clock_offset_ms
    if offset is None or abs(offset) <= p.max_ms:
        return None
    side = "behind" if offset > 0 else "ahead of"
    return Firing(f"device clock {abs(offset)} ms {side} the fleet's", {"offset_ms": offset, "max_ms": p.max_ms})


def _open_event(event_type: str, what: str) -> Callable[[Facts, NoParams, datetime], Outcome]:
    def evaluate(facts: Facts, p: NoParams, now: datetime) -> Outcome:
        events = facts.open_events.get(event_type, [])
        if not events:
            return None
        since = min(e.since for e in events)
        return Firing(f"{what} since {since.isoformat(timespec='seconds')}",
                      {"events": len(events), "since": since.isoformat(),
                       "event_ids": [e.event_id for e in events][:5]})
    return evaluate


def _camera_fps(facts: Facts) -> dict[str, float]:
    """fps per camera: `fps` for a single camera, `<id>.fps` with several."""
    figures = facts.health.get("roles") if facts.health else None
    camera = figures.get("camera") if isinstance(figures, dict) else None
    if not isinstance(camera, dict):
        return {}
    found: dict[str, float] = {}
    for key, value in camera.items():
        number = _number(value)
        if number is not None and (key == "fps" or key.endswith(".fps")):
            found[key] = number
    return found


def camera_stalled(facts: Facts, p: NoParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    stalled = sorted(key for key, fps in _camera_fps(facts).items() if fps == 0)
    if not stalled:
        return None
    return Firing(f"camera judged no frames since its last health ({', '.join(stalled)})", {"stalled": stalled})


def camera_fps_low(facts: Facts, p: FpsParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    low = {key: fps for key, fps in _camera_fps(facts).items() if 0 < fps < p.min_fps}
    if not low:
        return None
    shown = ", ".join(f"{k} {v:g}" for k, v in sorted(low.items()))
    return Firing(f"camera fps under {p.min_fps:g}: {shown}", {"fps": low, "min_fps": p.min_fps})


def speaker_playback_failed(facts: Facts, p: PlaybackParams, now: datetime) -> Outcome:
    failures = facts.playback_failures.get(p.window_s, 0)
    if failures < p.failures:
        return None
    return Firing(f"{failures} failed playbacks in {p.window_s} s", {"failures": failures, "window_s": p.window_s})


def queue_growing(facts: Facts, p: QueueParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    queue = _health_figure(facts, "queue")
    if queue is None or queue <= p.max_queue:
        return None
    before = facts.health_before.get(p.window_s)
    earlier = _number(before.get("queue")) if before else None
    if earlier is not None and queue <= earlier:
        return None  # above the bound but draining (or flat): not growing
    return Firing(f"queue {queue:g} above {p.max_queue} and growing",
                  {"queue": queue, "earlier": earlier, "max_queue": p.max_queue})


def dropped_rising(facts: Facts, p: WindowParams, now: datetime) -> Outcome:
    if not facts.hears:
        return UNKNOWN
    dropped = _health_figure(facts, "dropped")
    if dropped is None:
        return None
    before = facts.health_before.get(p.window_s)
    earlier = _number(before.get("dropped")) if before else None
    if earlier is None:
        return None
    rise = dropped - earlier if dropped >= earlier else dropped  # lower: the counter restarted with a boot
    if rise <= 0:
        return None
    return Firing(f"{rise:g} messages dropped in {p.window_s} s", {"dropped": rise, "window_s": p.window_s})


def ingest_gaps(facts: Facts, p: GapParams, now: datetime) -> Outcome:
    missing = facts.missing.get(p.window_s, 0)
    if missing < p.missing:
        return None
    return Firing(f"{missing} messages missing (open gaps found in {p.window_s} s)",
                  {"missing": missing, "window_s": p.window_s})


def _children_where(what: str, test: Callable[[ChildFact], bool]) -> Callable[[Facts, OfflineParams, datetime],
                                                                               Outcome]:
    """Fires on the Pi while any of its children meets `test` for at least for_s. UNKNOWN while the
    Pi is not heard: it cannot see its children then (fleet/children/presence.py), so a live
    alert stays as it is. The value lists the children (sorted, at most CHILDREN_LISTED)."""

    def evaluate(facts: Facts, p: OfflineParams, now: datetime) -> Outcome:
        if not facts.hears:
            return UNKNOWN
        hit = sorted(c.child_id for c in facts.children
                     if test(c) and (c.since is None or (now - c.since).total_seconds() >= p.for_s))
        if not hit:
            return None
        shown = ", ".join(hit[:CHILDREN_LISTED]) + (", …" if len(hit) > CHILDREN_LISTED else "")
        return Firing(f"{len(hit)} {what}: {shown}", {"children": hit[:CHILDREN_LISTED], "count": len(hit)})
    return evaluate


CHILDREN_LISTED = 20


# -- the kinds -------------------------------------------------------------------------------

Need = Literal["open_events", "presence_changes", "births", "playback_failures", "missing", "health_before",
               "clock", "children"]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    params: type[Params]
    evaluate: Callable[[Facts, Any, datetime], Outcome]
    need: Need | None = None  # the batch fact it reads besides the device row
    event_type: str | None = None  # for need open_events
    description: str = ""


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("offline", OfflineParams, offline, description="offline (a death or silent) for at least for_s"),
    Kind("stale", NoParams, stale, description="connected, but health overdue (docs/fleet.md, Liveness)"),
    Kind("flapping", FlappingParams, flapping, "presence_changes",
         description="at least `changes` online<->offline changes in window_s: one alert, however many flaps"),
    Kind("temp_high", TempParams, temp_high, description="health temp_c above max_c"),
    Kind("disk_high", PctParams, disk_high, description="health disk_pct above max_pct"),
    Kind("mem_high", PctParams, mem_high, description="health mem_pct above max_pct"),
    Kind("heap_low", HeapParams, heap_low, description="health heap_free below min_bytes"),
    Kind("crash_loop", CrashLoopParams, crash_loop, "births", description="at least `boots` births in window_s"),
    Kind("safe_mode", NoParams, safe_mode, description="health (else birth) says mode safe"),
    Kind("clock_drift", ClockParams, clock_drift, "clock",
         description="the last health's arrival minus its ts beyond max_ms either way"),
    Kind("lamp_failure", NoParams, _open_event("lamp_failure", "lamp failure"), "open_events", "lamp_failure",
         description="an open lamp_failure event (start without end)"),
    Kind("day_burning", NoParams, _open_event("day_burning", "lamp burning by day"), "open_events", "day_burning",
         description="an open day_burning event"),
    Kind("sensor_alarm", NoParams, _open_event("alarm", "sensor alarm"), "open_events", "alarm",
         description="an open alarm event"),
    Kind("camera_stalled", NoParams, camera_stalled, description="health roles.camera fps 0"),
    Kind("camera_fps_low", FpsParams, camera_fps_low, description="health roles.camera fps above 0, under min_fps"),
    Kind("speaker_playback_failed", PlaybackParams, speaker_playback_failed, "playback_failures",
         description="at least `failures` playback events ended failed in window_s"),
    Kind("queue_growing", QueueParams, queue_growing, "health_before",
         description="health queue above max_queue and higher than at the window's start"),
    Kind("dropped_rising", WindowParams, dropped_rising, "health_before",
         description="health dropped rose within window_s"),
    Kind("ingest_gaps", GapParams, ingest_gaps, "missing",
         description="at least `missing` seq numbers in open gaps detected in window_s"),
    Kind("child_offline", OfflineParams,
         _children_where("children offline", lambda c: c.present is False), "children",
         description="a child device of the Pi offline (its death: unreachable) for at least for_s"),
    Kind("child_frozen", OfflineParams,
         _children_where("children with a frozen picture", lambda c: c.present is True and c.state == "frozen"),
         "children", description="a child camera's picture frozen (health state frozen) for at least for_s"),
    Kind("child_no_frames", OfflineParams,
         _children_where("children reachable without frames", lambda c: c.present is True and c.state == "no_frames"),
         "children", description="a child camera reachable but decoding no frames for at least for_s"),
)}


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise RuleError(f"unknown rule kind {name[:40]!r}; known: {', '.join(KINDS)}") from None


def check_params(kind: str, params: Any) -> dict[str, Any]:
    """The parameters with their defaults filled in, or RuleError saying what is wrong."""
    model = kind_of(kind).params
    if not isinstance(params, dict):
        raise RuleError("params must be an object")
    try:
        return model.model_validate(params).model_dump()
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                             for e in err.errors()[:5])
        raise RuleError(f"bad params for {kind}: {problems}") from None


def evaluate(kind: str, params: Mapping[str, Any], facts: Facts, now: datetime) -> Outcome:
    spec = kind_of(kind)
    return spec.evaluate(facts, spec.params.model_validate(dict(params)), now)


def applies(rule_device_kind: str | None, rule_role: str | None, rule_ward: str | None,
            device_kind: str | None, roles: Sequence[str], ward: str) -> bool:
    """Whether a rule's scope (null: any) covers a device."""
    return ((rule_device_kind is None or rule_device_kind == device_kind)
            and (rule_role is None or rule_role in roles)
            and (rule_ward is None or rule_ward == ward))


# -- builtin rules ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Builtin:
    name: str
    kind: str
    severity: str
    device_kind: str | None = None
    role: str | None = None


BUILTINS: tuple[Builtin, ...] = (
    Builtin("offline", "offline", "major"),
    Builtin("stale", "stale", "warning"),
    Builtin("flapping", "flapping", "minor"),
    Builtin("crash loop", "crash_loop", "major"),
    Builtin("safe mode", "safe_mode", "major"),
    Builtin("clock drift", "clock_drift", "minor"),
    Builtin("queue growing", "queue_growing", "warning"),
    Builtin("dropped rising", "dropped_rising", "warning"),
    Builtin("ingest gaps", "ingest_gaps", "warning"),
    Builtin("esp32 heap low", "heap_low", "minor", device_kind="esp32"),
    Builtin("pi temperature high", "temp_high", "major", device_kind="pi"),
    Builtin("pi disk high", "disk_high", "major", device_kind="pi"),
    Builtin("pi memory high", "mem_high", "minor", device_kind="pi"),
    Builtin("camera stalled", "camera_stalled", "major", role="camera"),
    Builtin("camera fps low", "camera_fps_low", "minor", role="camera"),
    Builtin("lamp failure", "lamp_failure", "major", role="light"),
    Builtin("day burning", "day_burning", "minor", role="light"),
    Builtin("sensor alarm", "sensor_alarm", "major", role="sensor"),
    Builtin("speaker playback failed", "speaker_playback_failed", "major", role="speaker"),
    Builtin("child offline", "child_offline", "major", role="children"),
    Builtin("child frozen", "child_frozen", "major", role="children"),
    Builtin("child no frames", "child_no_frames", "major", role="children"),
)


def default_params(kind: str) -> dict[str, Any]:
    return kind_of(kind).params().model_dump()
