"""`GET /api/gis/devices.geojson` (issue 13 §6) on SQLite and PostgreSQL: RFC 7946 as a GeoJSON
library reads it (geojson-pydantic), the devices with coordinates only (the others counted),
each filter of `GET /api/devices` giving the same devices, pages that link the next, the bound."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from geojson_pydantic import Feature, FeatureCollection, Point

from fleet.auth.roles import Role
from tests.fleet.ops_map_kit import browser, hearing, make_city, quiet_fleet
from tests.support.mosquitto import Mosquitto

Layer = FeatureCollection[Feature[Point, dict[str, Any]]]


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with quiet_fleet(database_url, mosquitto.url) as http:
        yield http


async def _layer(http: httpx.AsyncClient, **params: Any) -> tuple[Layer, httpx.Response]:
    response = await http.get("/api/gis/devices.geojson", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    return Layer.model_validate(response.json()), response


async def test_the_layer_is_geojson_filtered_like_the_device_list(fleet: httpx.AsyncClient) -> None:
    await hearing(fleet)
    made = await make_city("gis")
    layer, response = await _layer(fleet)
    body = response.json()
    placed = sorted(d for d in made.online + made.offline + made.never_seen if d not in made.unplaced)
    assert [f.id for f in layer.features] == placed
    assert body["total"] == int(response.headers["X-Total-Count"]) == len(placed)
    assert body["without_coordinates"] == int(response.headers["X-Without-Coordinates"]) == len(made.unplaced)
    assert body["next"] is None
    listed = {d["id"]: d for d in (await fleet.get("/api/devices", params={"limit": 1000})).json()}
    for f in layer.features:
        device, props = listed[str(f.id)], f.properties or {}
        assert f.geometry is not None
        assert (f.geometry.coordinates.longitude, f.geometry.coordinates.latitude) == (device["longitude"],
                                                                                       device["latitude"])
        assert {k: props[k] for k in ("id", "name", "kind", "roles", "ward", "state", "state_reason", "fw")} == {
            k: device[k] for k in ("id", "name", "kind", "roles", "ward", "state", "state_reason", "fw")}
        assert props["alerts_open"] == made.alerted.get(device["id"], 0)
        assert (props["last_seen"] is None) == (device["last_seen_at"] is None)
    assert {str(f.id): (f.properties or {})["state"] for f in layer.features if str(f.id) in made.online} == {
        d: "online" for d in made.online}

    # each filter: the same devices as the list's, less those without coordinates
    for params in ({"ward": "tan-phu"}, {"kind": "pi"}, {"state": "offline"}, {"state": "never_seen"},
                   {"tag": "light", "ward": "tan-dong"}, {"status": "active", "kind": "esp32"}, {"online": "true"},
                   {"ward": "nowhere"}):
        listing = (await fleet.get("/api/devices", params={**params, "limit": 1000})).json()
        expected = sorted(d["id"] for d in listing if d["latitude"] is not None)
        layer, response = await _layer(fleet, **params)
        assert [f.id for f in layer.features] == expected, params
        assert response.json()["without_coordinates"] == sum(1 for d in listing if d["latitude"] is None), params

    # pages: each links the next until the last
    seen: list[str] = []
    url: str | None = "/api/gis/devices.geojson?limit=4&ward=tan-binh&state=never_seen"
    while url:
        page = (await fleet.get(url)).json()
        Layer.model_validate(page)
        seen += [f["id"] for f in page["features"]]
        url = page["next"]
    listing = (await fleet.get("/api/devices", params={"ward": "tan-binh", "state": "never_seen"})).json()
    assert seen == sorted(d["id"] for d in listing if d["latitude"] is not None)

    # bounded, and the same refusals as the list's
    too_many = await fleet.get("/api/gis/devices.geojson", params={"limit": 10_001})
    assert too_many.status_code == 422 and "10000" in too_many.text
    wrong = await fleet.get("/api/gis/devices.geojson", params={"status": "stale"})
    assert wrong.status_code == 422 and "state=" in wrong.text
    async with browser(fleet, Role.READ_ONLY) as reader:
        assert (await reader.get("/api/gis/devices.geojson")).status_code == 200
    async with httpx.AsyncClient(base_url=fleet.base_url) as stranger:
        assert (await stranger.get("/api/gis/devices.geojson")).status_code == 401
