"""The rollouts for a person: `/rollouts` (each with its progress per state and why it paused) and
`/rollouts/{id}` (its facts, the pause reason with the devices' figures, its devices in order).
The same rows and counts as `/api/rollouts`."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleet.ota.rollout_commands import counts_of
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.states import BAD, IN_FLIGHT, DeviceState
from fleet.web.pages import _ago, templates, viewer_of

router = APIRouter(include_in_schema=False)
LISTED = 50  # rollouts on the list page, newest first
DEVICES_SHOWN = 500  # devices on a rollout's page, by rank (the API pages through all)
# the progress bar's parts, in order, each with its CSS class
BAR = (("confirmed", "ok", (DeviceState.CONFIRMED,)), ("in flight", "busy", tuple(IN_FLIGHT)),
       ("pending", "idle", (DeviceState.PENDING,)), ("failed or rolled back", "bad", tuple(BAD)))
HEALTH_WORDS = {"loop_ms": "loop time (ms)", "heap_free": "free heap (B)", "camera_fps": "camera fps",
                "dropped": "dropped messages", "camera_dropped_frames": "dropped frames",
                "lamp_failures": "lamp failures"}


def _number(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return str(int(value)) if isinstance(value, int | float) else str(value)


def reason_text(reason: dict[str, Any] | None) -> str:
    """One sentence for a pause reason (fleet/ota/rollouts.py writes them)."""
    if not reason:
        return ""
    figure = str(reason.get("figure", "?"))
    count = reason.get("count", len(reason.get("devices", [])))
    phase = int(reason.get("phase", 0)) + 1
    if figure == "command":
        rollback = reason.get("rollback")
        return f"paused by {reason.get('by', '?')}" + (f" to roll back phase {int(rollback) + 1}"
                                                       if rollback is not None else "")
    if figure == "failure_rate":
        return (f"failure rate {reason.get('pct')} % is above {reason.get('max_failure_pct')} %: {reason.get('failed')}"
                f" of {reason.get('offered')} devices offered in phase {phase} failed or rolled back")
    if figure == "online":
        return f"{count} updated devices of phase {phase} were not online at the gate"
    if figure == "boots":
        return (f"{count} devices of phase {phase} booted more than {reason.get('max_boots')} times "
                "for the update (a crash loop)")
    return (f"{HEALTH_WORDS.get(figure, figure)} worse by more than {reason.get('tolerance_pct')} % "
            f"after the update on {count} devices of phase {phase}")


def _bar(counts: dict[str, int], total: int) -> list[dict[str, Any]]:
    """The progress bar's segments: x and width in percent (SVG attributes: the policy allows no inline style)."""
    parts, x = [], 0.0
    for label, css, states in BAR:
        n = sum(counts.get(s.value, 0) for s in states)
        width = 100.0 * n / total if total else 0.0
        parts.append({"label": label, "css": css, "n": n, "x": round(x, 3), "width": round(width, 3)})
        x += width
    return parts


def _summary(rollout: Rollout, counts: dict[str, int]) -> dict[str, Any]:
    phases = rollout.phases
    return {"r": rollout, "counts": counts, "bar": _bar(counts, rollout.total),
            "phase": f"{rollout.phase + 1} of {len(phases)} ({_number(phases[rollout.phase])} %, "
                     f"{rollout.sizes[rollout.phase]} devices)",
            "why": reason_text(rollout.pause_reason)}


@router.get("/rollouts", response_class=HTMLResponse)
async def rollouts_page(request: Request) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    rollouts = await Rollout.all().order_by("-id").limit(LISTED)
    counts = await counts_of([r.id for r in rollouts])
    return templates.TemplateResponse(request, "rollouts.html", {
        "viewer": viewer, "rows": [_summary(r, counts[r.id]) for r in rollouts],
        "total": await Rollout.all().count(), "shown": LISTED})


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
async def rollout_page(request: Request, rollout_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                       state: Annotated[DeviceState | None, Query()] = None) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    rollout = await Rollout.get_or_none(id=rollout_id)
    if rollout is None:
        return templates.TemplateResponse(request, "rollout.html", {"viewer": viewer, "rollout": None,
                                                                    "rollout_id": rollout_id}, status_code=404)
    counts = (await counts_of([rollout.id]))[rollout.id]
    query = RolloutDevice.filter(rollout_id=rollout.id)
    if state is not None:
        query = query.filter(state=state)
    rows = await query.order_by("rank").limit(DEVICES_SHOWN)
    summary = _summary(rollout, counts)
    now = datetime.now(UTC)
    reason = rollout.pause_reason or {}
    breached = [{"device": d, "before": reason.get("before", {}).get(d), "after": reason.get("after", {}).get(d),
                 "why": reason.get("reasons", {}).get(d, "")} for d in reason.get("devices", [])]
    return templates.TemplateResponse(request, "rollout.html", {
        "viewer": viewer, "rollout": rollout, "s": summary, "now": now, "state": state, "states": list(DeviceState),
        "breached": breached, "figure": reason.get("figure"),
        "facts": [
            ("Release", rollout.release_name),
            ("Target", _target(rollout.target) + f" · {rollout.total} devices"),
            ("Phases", " → ".join(f"{_number(p)} % ({n})" for p, n in zip(rollout.phases, rollout.sizes,
                                                                          strict=True))),
            ("Gate", f"soak {_number(rollout.soak_s)} s · failures ≤ {_number(rollout.max_failure_pct)} % · back "
                     f"online within {rollout.online_within_s} s · at most {rollout.max_boots} boots · health "
                     f"within {_number(rollout.tolerance_pct)} %"),
            ("Offers", f"at most {rollout.offers_per_min} a minute · no report for {rollout.offer_timeout_s} s: "
                       "failed (timeout)"),
            ("Windows", ", ".join(f"{k}: {v}" for k, v in rollout.windows.items()) + f" ({rollout.timezone})"
             if rollout.windows else "none: any time"),
            ("Started", f"{rollout.created_at:%Y-%m-%d %H:%M:%S} UTC by {rollout.created_by} "
                        f"({_ago(rollout.created_at, now)})"),
        ],
        "devices": [{"row": r, "offered": _ago(r.offered_at, now) if r.offered_at else "—",
                     "figures": _figures(r.before, r.after)} for r in rows],
        "listed": len(rows), "matching": counts.get(state.value, 0) if state else rollout.total,
    })


def _target(target: dict[str, Any]) -> str:
    parts = [f"{key} {', '.join(map(str, value))}" for key, value in target.items()
             if key != "kind" and value]
    return f"{target.get('kind')} devices" + (f" with {'; '.join(parts)}" if parts else "")


def _figures(before: dict[str, float] | None, after: dict[str, float] | None) -> str:
    if not before or not after:
        return ""
    return " · ".join(f"{k} {_number(before[k])} → {_number(after[k])}" for k in before if k in after)
