"""The fleet as a GIS layer: `GET /api/gis/devices.geojson`, an RFC 7946 FeatureCollection of the
devices that have coordinates, filtered like `GET /api/devices` (docs/ops.md, "GIS layer")."""

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from fleet.api.deps import LOGGED_IN, Reader, RuntimeDep
from fleet.api.routes.devices import TOTAL_HEADER, Filters, view_of
from fleet.gis import feature, open_alerts, placed, with_place, without_place

router = APIRouter(prefix="/api/gis", tags=["gis"], dependencies=[LOGGED_IN])
MEDIA_TYPE = "application/geo+json"
LIMIT_MAX = 10_000
UNPLACED_HEADER = "X-Without-Coordinates"


class GeoJSONResponse(JSONResponse):
    media_type = MEDIA_TYPE


# response_class Response (no media type of its own): 200 is documented as application/geo+json only,
# the errors as the API's JSON
@router.get("/devices.geojson", response_class=Response, responses={200: {
    "content": {MEDIA_TYPE: {}},
    "description": "a FeatureCollection; foreign members `total` (devices with coordinates that match), "
                   "`without_coordinates` (devices that match but have none, left out) and `next` (the "
                   "next page's URL, null on the last page)",
    "headers": {TOTAL_HEADER: {"description": "devices with coordinates that match, over all pages",
                               "schema": {"type": "integer"}},
                UNPLACED_HEADER: {"description": "devices that match but have no coordinates (left out)",
                                  "schema": {"type": "integer"}}}}})
async def devices_geojson(
    _: Reader,
    runtime: RuntimeDep,
    request: Request,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = LIMIT_MAX,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> GeoJSONResponse:
    """Each device with a latitude and longitude as a Point [longitude, latitude] with its id, name,
    kind, roles, ward, state and state_reason (as `GET /api/devices` judges them), last_seen, fw
    and alerts_open (alerts not resolved). By id, at most `limit` (≤ 10,000) a page; `next` links
    the following page. Four statements whatever the size: the page, two counts, the alerts."""
    view = view_of(runtime)
    selected = filters.select(view)
    devices = await placed(selected, offset, limit)
    total = offset + len(devices) if 0 < len(devices) < limit else await with_place(selected).count()
    unplaced = await without_place(selected).count()
    alerts = await open_alerts()
    following = None
    if offset + len(devices) < total:
        query: dict[str, Any] = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit")}
        query.update(limit=limit, offset=offset + len(devices))
        following = f"{request.url.path}?{urlencode(query)}"
    body = {"type": "FeatureCollection",
            "features": [feature(d, view.judge(d), alerts.get(d.id, 0)) for d in devices],
            "total": total, "without_coordinates": unplaced, "next": following}
    return GeoJSONResponse(body, headers={TOTAL_HEADER: str(total), UNPLACED_HEADER: str(unplaced)})
