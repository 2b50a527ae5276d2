"""The fleet on a map (docs/ops.md, "Dashboard, map and GIS layer"): devices as GeoJSON points
(RFC 7946) for the city's GIS, the ward outlines a map is drawn over, and the projection that puts
both on a flat frame. The outlines and the projection are pure; `placed` and `open_alerts` ask the
database, one statement each.
"""

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.queryset import QuerySet

from fleet.liveness import Verdict
from fleet.models import Device
from fleet.ops.models import Alert, AlertState

OUTLINES_MAX_BYTES = 5 * 1024 * 1024  # a ward-outline file larger than this is refused
OUTLINES_MAX_FEATURES = 1000
OUTLINES_MAX_POINTS = 200_000  # vertices over all rings
WARD_PROPERTY = "ward"  # the outline's ward: the devices' `ward` value
LABEL_PROPERTY = "name"  # optional: the ward's name as the map shows it (else the ward value)


class OutlineError(ValueError):
    """A ward-outline file the map cannot use; the message says what is wrong (never its content)."""


Ring = list[tuple[float, float]]  # (lon, lat), closed or not


@dataclass(frozen=True, slots=True)
class WardOutline:
    ward: str
    label: str
    polygons: list[list[Ring]]  # each: its outer ring, then its holes (drawn with the even-odd rule)

    @property
    def rings(self) -> list[Ring]:
        return [ring for polygon in self.polygons for ring in polygon]


def _position(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])):
        raise OutlineError(f"{where}: a position must be [longitude, latitude]")
    lon, lat = float(value[0]), float(value[1])
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise OutlineError(f"{where}: a position out of range (longitude -180..180, latitude -90..90)")
    return lon, lat


def _rings(polygon: Any, where: str) -> list[Ring]:
    if not isinstance(polygon, list) or not polygon:
        raise OutlineError(f"{where}: a polygon must be a list of linear rings")
    rings = []
    for ring in polygon:
        if not isinstance(ring, list) or len(ring) < 4:
            raise OutlineError(f"{where}: a linear ring needs at least 4 positions")
        rings.append([_position(p, where) for p in ring])
    return rings


def parse_outlines(doc: Any) -> list[WardOutline]:
    """The wards of a GeoJSON FeatureCollection (or one Feature) of Polygon / MultiPolygon
    features, each naming its ward in `properties.ward` (optionally a `properties.name` to show)."""
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = {"type": "FeatureCollection", "features": [doc]}
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"),
                                                                                               list):
        raise OutlineError("not a GeoJSON FeatureCollection")
    features = doc["features"]
    if len(features) > OUTLINES_MAX_FEATURES:
        raise OutlineError(f"{len(features)} features: at most {OUTLINES_MAX_FEATURES}")
    outlines: list[WardOutline] = []
    points = 0
    for index, feature in enumerate(features):
        where = f"feature {index}"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise OutlineError(f"{where}: not a Feature")
        properties = feature.get("properties") or {}
        ward = properties.get(WARD_PROPERTY) if isinstance(properties, dict) else None
        if not isinstance(ward, str) or not ward.strip() or len(ward) > 80:
            raise OutlineError(f"{where}: properties.{WARD_PROPERTY} must name the ward (1-80 characters)")
        label = properties.get(LABEL_PROPERTY)
        geometry = feature.get("geometry")
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if kind == "Polygon":
            polygons = [_rings(coordinates, where)]
        elif kind == "MultiPolygon" and isinstance(coordinates, list) and coordinates:
            polygons = [_rings(polygon, where) for polygon in coordinates]
        else:
            raise OutlineError(f"{where}: the geometry must be a Polygon or a MultiPolygon")
        points += sum(len(r) for polygon in polygons for r in polygon)
        if points > OUTLINES_MAX_POINTS:
            raise OutlineError(f"more than {OUTLINES_MAX_POINTS} positions in all")
        shown = label if isinstance(label, str) and label.strip() else ward
        outlines.append(WardOutline(ward, shown[:80], polygons))
    if not outlines:
        raise OutlineError("no ward in the file")
    return outlines


def load_outlines(path: Path) -> list[WardOutline]:
    """The ward outlines in the file `path` (FLEET_WARD_OUTLINES); OutlineError says what is wrong."""
    try:
        size = path.stat().st_size
        if size > OUTLINES_MAX_BYTES:
            raise OutlineError(f"{size} bytes: at most {OUTLINES_MAX_BYTES}")
        doc = json.loads(path.read_bytes())
    except OSError as err:
        raise OutlineError(err.strerror or "cannot be read") from None
    except (ValueError, RecursionError) as err:
        if isinstance(err, OutlineError):
            raise
        raise OutlineError("not JSON") from None
    return parse_outlines(doc)


# -- the flat frame ------------------------------------------------------------------------------

MIN_SPAN_DEG = 0.002  # about 220 m: one device, or devices at one place, still get a frame


@dataclass(frozen=True, slots=True)
class Frame:
    """An equirectangular projection of a bounding box onto `width` x `height` pixels: longitude
    scaled by cos(latitude) at the box's middle, so a city's shapes keep their proportions."""

    west: float
    south: float
    east: float
    north: float
    width: float
    height: float
    kx: float  # pixels per degree of longitude
    ky: float  # pixels per degree of latitude
    x0: float
    y0: float

    @classmethod
    def fit(cls, points: Iterable[tuple[float, float]], width: float, margin: float = 24,
            height_max: float = 900) -> "Frame":
        lons, lats = [], []
        for lon, lat in points:
            lons.append(lon)
            lats.append(lat)
        if not lons:
            lons, lats = [0.0], [0.0]
        west, east, south, north = min(lons), max(lons), min(lats), max(lats)
        if east - west < MIN_SPAN_DEG:
            middle = (east + west) / 2
            west, east = middle - MIN_SPAN_DEG / 2, middle + MIN_SPAN_DEG / 2
        if north - south < MIN_SPAN_DEG:
            middle = (north + south) / 2
            south, north = middle - MIN_SPAN_DEG / 2, middle + MIN_SPAN_DEG / 2
        shrink = math.cos(math.radians((north + south) / 2))
        span_x, span_y = (east - west) * shrink, north - south
        scale = min((width - 2 * margin) / span_x, (height_max - 2 * margin) / span_y)
        height = span_y * scale + 2 * margin
        x0 = (width - span_x * scale) / 2
        return cls(west, south, east, north, width, round(height, 1), scale * shrink, scale, x0, margin)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return round(self.x0 + (lon - self.west) * self.kx, 1), round(self.y0 + (self.north - lat) * self.ky, 1)

    def path(self, rings: Sequence[Ring]) -> str:
        """An SVG path's `d` for the rings (each closed)."""
        parts = []
        for ring in rings:
            points = [self.xy(lon, lat) for lon, lat in ring]
            parts.append("M" + "L".join(f"{x:g},{y:g}" for x, y in points) + "Z")
        return "".join(parts)

    def graticule(self, lines: int = 5) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Round longitudes and latitudes inside the frame: (value, pixel) for vertical and horizontal lines."""
        def steps(low: float, high: float) -> list[float]:
            raw = (high - low) / lines
            step = 10 ** math.floor(math.log10(raw))
            for factor in (1, 2, 5, 10):
                if raw <= step * factor:
                    step *= factor
                    break
            first = math.ceil(low / step) * step
            return [round(first + i * step, 6) for i in range(int((high - first) / step) + 1)]
        verticals = [(lon, self.xy(lon, self.north)[0]) for lon in steps(self.west, self.east)]
        horizontals = [(lat, self.xy(self.west, lat)[1]) for lat in steps(self.south, self.north)]
        return verticals, horizontals


# -- devices with their place --------------------------------------------------------------------

PLACED_FIELDS = ("id", "name", "kind", "roles", "ward", "latitude", "longitude", "fw", "status", "online",
                 "session", "last_seen_at", "last_death_at", "last_death_reason", "silenced_at",
                 "health_period_s")


@dataclass(frozen=True, slots=True)
class Placed:
    """What the map and the GIS layer show of a device, and what fleet.liveness judges it by."""

    id: str
    name: str
    kind: str | None
    roles: list[str]
    ward: str
    latitude: float
    longitude: float
    fw: str | None
    status: str
    online: bool
    session: int | None
    last_seen_at: datetime | None
    last_death_at: datetime | None
    last_death_reason: str | None
    silenced_at: datetime | None
    health_period_s: int


def with_place(query: QuerySet[Device]) -> QuerySet[Device]:
    return query.filter(latitude__isnull=False, longitude__isnull=False)


def without_place(query: QuerySet[Device]) -> QuerySet[Device]:
    return query.filter(Q(latitude__isnull=True) | Q(longitude__isnull=True))


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    moment = datetime.fromisoformat(str(value))  # SQLite's text, as Tortoise wrote it (UTC, with offset)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _roles(value: Any) -> list[str]:
    roles = json.loads(value) if isinstance(value, str | bytes) else value
    return [str(r) for r in roles] if isinstance(roles, list) else []


async def placed(query: QuerySet[Device], offset: int, limit: int) -> list[Placed]:
    """The devices of `query` that have coordinates, by id: one statement, only the columns shown.

    The statement is Tortoise's, its rows the driver's: Tortoise's own conversion of every value
    of every row took 300 ms for 10,000 devices here, the driver's rows 30 ms; only the JSON, the
    times and the flag need converting (SQLite returns text and integers for them)."""
    selected = with_place(query).order_by("id").offset(offset).limit(limit).values_list(*PLACED_FIELDS)
    selected._choose_db_if_not_chosen()
    selected._make_query()
    sql, params = selected.query.get_parameterized_sql()
    assert selected._db is not None  # chosen above
    _, rows = await selected._db.execute_query(sql, params)
    out = []
    for row in rows:
        (device_id, name, kind, roles, ward, latitude, longitude, fw, status, online, session, last_seen_at,
         last_death_at, last_death_reason, silenced_at, period) = tuple(row)
        out.append(Placed(str(device_id), name or "", kind, _roles(roles), ward or "", float(latitude),
                          float(longitude), fw, str(status), bool(online), session, _when(last_seen_at),
                          _when(last_death_at), last_death_reason, _when(silenced_at), int(period)))
    return out


async def open_alerts() -> dict[str, int]:
    """Alerts not resolved (open or acknowledged), per device: one grouped statement."""
    rows = await (Alert.exclude(state=AlertState.RESOLVED).annotate(n=Count("id")).group_by("device_id")
                  .values_list("device_id", "n"))
    return {str(device_id): int(n) for device_id, n in rows}


def feature(device: Placed, verdict: Verdict, alerts: int) -> dict[str, Any]:
    """One device as an RFC 7946 Feature: a Point [longitude, latitude] and what ops look at."""
    return {
        "type": "Feature", "id": device.id,
        "geometry": {"type": "Point", "coordinates": [device.longitude, device.latitude]},
        "properties": {
            "id": device.id, "name": device.name, "kind": device.kind, "roles": device.roles, "ward": device.ward,
            "state": verdict.state.value, "state_reason": verdict.reason.value if verdict.reason else None,
            "last_seen": device.last_seen_at.isoformat() if device.last_seen_at else None, "fw": device.fw,
            "alerts_open": alerts,
        },
    }
