"""The map page `/map` (issue 13 §5): dots in the liveness verdict's colours over the sample ward
outlines (demo/data/wards.geojson), a ring for an open alert, links to the device pages, filters,
the count of devices without coordinates; a plain graticule without outlines; a bad outline file
refused at start, or shown on the page when it went bad later; 10,000 devices in one compact SVG."""

import re
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet.auth.roles import Role
from fleet.models import Device
from tests.fleet.ops_map_kit import WARDS_FILE, browser, hearing, make_city, ops_settings
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

DOT = re.compile(r'<a href="/devices/([^"]+)"><title>[^<]+</title>(?:<circle [^>]+ class="ring"/>)?'
                 r'<circle cx="([\d.]+)" cy="([\d.]+)" r="[\d.]+" class="([^"]+)"/></a>')
WARD = re.compile(r'<path data-ward="([^"]+)" d="([^"]+)"/>')


def dots(page: str) -> dict[str, tuple[float, float, str]]:
    return {m[0]: (float(m[1]), float(m[2]), m[3]) for m in DOT.findall(page)}


def boxes(page: str) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for ward, d in WARD.findall(page):
        xs = [float(x) for x in re.findall(r"[ML]([\d.]+),", d)]
        ys = [float(y) for y in re.findall(r",([\d.]+)", d)]
        out[ward] = (min(xs), min(ys), max(xs), max(ys))
    return out


async def test_the_map_over_ward_outlines(tmp_path: Path, mosquitto: Mosquitto) -> None:
    outlines = tmp_path / "wards.geojson"
    shutil.copy(WARDS_FILE, outlines)
    settings = ops_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, ward_outlines=outlines)
    async with running_fleet(settings) as http:
        await hearing(http)
        made = await make_city("map")
        async with browser(http, Role.READ_ONLY) as reader:
            page = await reader.get("/map")
            assert page.status_code == 200, page.text
            drawn = dots(page.text)
            assert set(drawn) == set(made.online + made.offline + made.never_seen) - set(made.unplaced)
            for device_id, (_, _, css) in drawn.items():
                state = ("s-online" if device_id in made.online else "s-offline" if device_id in made.offline
                         else "s-never_seen")
                assert css == state + (" alert" if device_id in made.alerted else ""), device_id
            # every dot inside its ward's outline (its box), so the outlines and the dots share the projection
            wards = boxes(page.text)
            assert sorted(wards) == ["tan-binh", "tan-dong", "tan-phu", "tan-thanh", "tan-thien", "tan-xuan",
                                     "tien-hung", "tien-thanh"]
            for device_id, (x, y, _) in drawn.items():
                left, top, right, bottom = wards[device_id.split("-", 1)[1].rsplit("-", 1)[0]]
                assert left < x < right and top < y < bottom, device_id
            assert f'<b id="count-online">{len(made.online)}</b>' in page.text
            assert f'<b id="count-alerts">{len(made.alerted)}</b>' in page.text
            assert f'<span id="unplaced">{len(made.unplaced)}</span>' in page.text
            assert "Tân Bình" in page.text  # the outline's name property as the label

            # the filters: the device list's
            page = await reader.get("/map", params={"ward": "tan-phu", "state": "offline", "kind": ""})
            listing = (await http.get("/api/devices", params={"ward": "tan-phu", "state": "offline"})).json()
            assert set(dots(page.text)) == {d["id"] for d in listing if d["latitude"] is not None} != set()
            assert '<option value="tan-phu" selected>' in page.text
            wrong = await reader.get("/map", params={"kind": "toaster"})
            assert wrong.status_code == 422 and "kind must be one of pi, esp32" in wrong.text

            # the file went bad after the start: the page says so and still shows the devices
            outlines.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
            page = await reader.get("/map")
            assert page.status_code == 200 and 'id="outline-error"' in page.text
            assert "feature 0: properties.ward must name the ward" in page.text
            assert len(dots(page.text)) == len(drawn) and not WARD.findall(page.text)


def test_a_bad_outline_file_stops_the_start(tmp_path: Path) -> None:
    for content, reason in (("not json", "not JSON"),
                            ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
                             '{"ward": "a"}, "geometry": {"type": "Point", "coordinates": [1, 2]}}]}',
                             "feature 0: the geometry must be a Polygon or a MultiPolygon"),
                            ('{"type": "FeatureCollection", "features": []}', "no ward in the file")):
        path = tmp_path / "bad.geojson"
        path.write_text(content)
        with pytest.raises(ValidationError, match=f"FLEET_WARD_OUTLINES {path}: {reason}"):
            fleet_settings("sqlite://x", None, ward_outlines=path)
    with pytest.raises(ValidationError, match="No such file"):
        fleet_settings("sqlite://x", None, ward_outlines=tmp_path / "missing.geojson")


async def test_ten_thousand_devices_on_plain_coordinates(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = ops_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)
    async with running_fleet(settings) as http:
        await Device.bulk_create([Device(id=f"big-{n:05d}", kind="esp32", ward=f"w{n % 9}",
                                         latitude=11.50 + (n // 100) * 0.0007, longitude=106.85 + (n % 100) * 0.0007)
                                  for n in range(10_000)], batch_size=2000)
        async with browser(http, Role.READ_ONLY) as reader:
            page = await reader.get("/map")
        assert page.status_code == 200
        drawn = dots(page.text)
        assert len(drawn) == 10_000 and {css for *_, css in drawn.values()} == {"s-never_seen"}
        assert not WARD.findall(page.text) and '<g class="grid">' in page.text and "°N</text>" in page.text
        svg = page.text[page.text.index("<svg id=\"map\""):page.text.index("</svg>")]
        assert len(svg) / 10_000 < 135, len(svg)  # bytes per device: a link, a circle and its title
