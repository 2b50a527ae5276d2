"""The video wall's page `/live` (docs/relay.md, "Live feed"): the newest device events as cards,
kept current by the browser's EventSource on `GET /api/relay/feed` (static/live.js; no inline
script under the fleet's CSP). The filters are the feed's own query parameters, in the page's
URL, checked by the feed's own model (fleet/api/routes/relay_feed.py FeedQuery). Snapshots are
shown to people with the `snapshots` permission only: nobody else is given their URL."""

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from fleet.api.deps import get_runtime
from fleet.api.routes.relay_feed import FEED_PATH, FeedQuery
from fleet.auth.roles import Permission
from fleet.models import Device
from fleet.relay.message import SEVERITIES
from fleet.web.broadcast_kit import guarded, page
from fleet.web.i18n import language_of, translate

router = APIRouter(include_in_schema=False)
SHOWN = 60  # cards on the wall, the newest first; the page starts with the newest this many
FILTERS = ("type", "phase", "category", "ward", "kind", "tag", "device", "min_severity")
PHASES = ("start", "update", "end", "once")
CATEGORIES = ("security", "traffic_safety", "other")
KINDS = ("pi", "esp32")


def _filters_of(request: Request) -> tuple[dict[str, list[str]], list[str]]:
    """The filters in the page's URL, and why they cannot be used (then none are)."""
    chosen = {name: [v for v in request.query_params.getlist(name) if v] for name in FILTERS}
    chosen = {name: values for name, values in chosen.items() if values}
    try:
        FeedQuery.model_validate({k: (v[-1] if k == "min_severity" else v) for k, v in chosen.items()})
    except ValidationError as err:
        return {}, [f"{'.'.join(str(p) for p in e['loc'][:1])}: {e['msg']}" for e in err.errors()]
    return chosen, []


def _words(lang: str) -> dict[str, str]:
    """What live.js shows, in the page's language."""
    keys = [f"live.phase.{p}" for p in PHASES] + [f"live.category.{c}" for c in CATEGORIES] \
        + [f"live.severity.{s}" for s in SEVERITIES] \
        + ["live.connected", "live.connecting", "live.lost", "live.gap", "live.overflow", "live.no_image",
           "live.image_pending"]
    return {key.removeprefix("live."): translate(lang, key) for key in keys}


@router.get("/live")
async def live_page(request: Request) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    chosen, errors = _filters_of(request)
    wards = [w for w in await Device.filter(ward__not="").distinct().order_by("ward").values_list("ward", flat=True)]
    pairs: list[tuple[str, Any]] = [(name, value) for name, values in chosen.items() for value in values]
    context = {
        "viewer": viewer, "errors": errors, "chosen": chosen, "wards": wards, "phases": PHASES,
        "categories": CATEGORIES, "kinds": KINDS, "severities": SEVERITIES,
        "feed_url": f"{FEED_PATH}?{urlencode([*pairs, ('backlog', SHOWN)])}", "shown": SHOWN,
        "snapshots": viewer.may(Permission.SNAPSHOTS), "words": _words(language_of(request)),
        "tz": get_runtime(request).settings.timezone,
    }
    return page(request, "live.html", context, 422 if errors else 200)
