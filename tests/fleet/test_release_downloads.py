"""Devices' downloads (/ota/files, Range, per-device tokens), offers, and Pi deltas, over real HTTP."""

import hashlib
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bsdiff4
import httpx

from fleet.ota.models import Release
from fleet.ota.releases import Releases
from tests.fleet.release_kit import TAR, ReleaseFolder, SigningKey, write_keys
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.wait import async_wait_for


async def publish(http: httpx.AsyncClient, folder: ReleaseFolder, signer: SigningKey) -> dict[str, Any]:
    response = await http.post("/api/releases", content=folder.tar(folder.signed(signer)), headers=TAR)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def service(http: httpx.AsyncClient) -> Releases:
    """A Releases of its own, as the rollout engine makes one: same settings, same token secret."""
    return Releases(http.app.state.runtime.settings)  # type: ignore[attr-defined]


def local(url: str, sha256: str) -> str:
    """The offer's URL (FLEET_PUBLIC_URL's host) as a path and query for the fleet under test."""
    parts = urlsplit(url.replace("{sha256}", sha256))
    return f"{parts.path}?{parts.query}"


async def offer_url(http: httpx.AsyncClient, name: str, device_id: str, now: float | None = None) -> str:
    release = await Release.get(name=name)
    offer = await service(http).build_offer(release, device_id, "o-1", "install", None, now)
    return str(offer["url"])


async def test_offers_and_downloads_with_range_and_per_device_tokens(
        ota_fleet: httpx.AsyncClient, signer: SigningKey) -> None:
    first = ReleaseFolder("esp32", "1.0.0", {"app.mpy": bytes(range(256)) * 40, "lib/x.mpy": b"x" * 1000})
    second = ReleaseFolder("esp32", "1.1.0", {"app.mpy": bytes(range(255, -1, -1)) * 40})
    await publish(ota_fleet, first, signer)
    await publish(ota_fleet, second, signer)
    for device in ("lamp-1", "lamp-2", "lamp-gone"):
        assert (await ota_fleet.post("/api/devices", json={"id": device, "kind": "esp32"})).status_code == 201
    await ota_fleet.post("/api/devices/lamp-gone/decommission")

    release = await Release.get(name="esp32-1.0.0")
    now = time.time()
    offer = await service(ota_fleet).build_offer(release, "lamp-1", "r1-d1", "install", None, now)
    assert set(offer) == {"v", "id", "release", "action", "meta", "sigs", "url", "exp"}
    assert (offer["v"], offer["id"], offer["release"], offer["action"]) == (1, "r1-d1", "esp32-1.0.0", "install")
    assert offer["meta"] == release.meta and offer["sigs"] == release.sigs
    assert offer["url"].startswith("http://fleet.example:8000/ota/files/{sha256}?t=lamp-1~esp32-1.0.0~")
    assert offer["exp"] == (int(now) + 3600) * 1000
    rollback = await service(ota_fleet).build_offer(release, "lamp-1", "r1-d1b", "rollback", None, now)
    assert set(rollback) == {"v", "id", "release", "action", "exp"} and rollback["action"] == "rollback"

    app = first.files["app.mpy"]
    app_sha = hashlib.sha256(app).hexdigest()
    url = local(offer["url"], app_sha)
    whole = await ota_fleet.get(url)
    assert whole.status_code == 200 and whole.content == app
    assert whole.headers["accept-ranges"] == "bytes" and int(whole.headers["content-length"]) == len(app)
    # an interrupted download resumes where it stopped
    head = await ota_fleet.get(url, headers={"Range": "bytes=0-999"})
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 0-999/{len(app)}"
    rest = await ota_fleet.get(url, headers={"Range": "bytes=1000-"})
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes 1000-{len(app) - 1}/{len(app)}"
    assert head.content + rest.content == app
    tail = await ota_fleet.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == app[-16:]
    past = await ota_fleet.get(url, headers={"Range": f"bytes={len(app)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(app)}"
    assert (await ota_fleet.get(url, headers={"Range": "bytes=5000-99999"})).content == app[5000:]

    def refused(response: httpx.Response, code: int, says: str) -> None:
        assert response.status_code == code, (response.status_code, response.text)
        assert says in response.json()["detail"], response.json()

    refused(await ota_fleet.get(f"/ota/files/{app_sha}"), 403, "needs the token")
    expired = await offer_url(ota_fleet, "esp32-1.0.0", "lamp-1", now=time.time() - 3601)
    refused(await ota_fleet.get(local(expired, app_sha)), 403, "expired")
    token = url.split("t=", 1)[1]
    forged = url.replace(token, token.replace("lamp-1~", "lamp-2~", 1))  # another device, same mac
    refused(await ota_fleet.get(forged), 403, "not valid")
    other_release = url.replace(token, token.replace("~esp32-1.0.0~", "~esp32-1.1.0~", 1))
    refused(await ota_fleet.get(other_release), 403, "not valid")
    gone = await offer_url(ota_fleet, "esp32-1.0.0", "lamp-gone")
    refused(await ota_fleet.get(local(gone, app_sha)), 403, "decommissioned")
    second_sha = hashlib.sha256(second.files["app.mpy"]).hexdigest()
    refused(await ota_fleet.get(local(offer["url"], second_sha)), 403, "not part of the token's release")
    refused(await ota_fleet.get(local(offer["url"], "ab" * 32)), 404, "no such file")
    refused(await ota_fleet.get(url.replace(token, "nonsense")), 403, "malformed")
    # lamp-2's own token for the other release fetches that release's file
    own = await offer_url(ota_fleet, "esp32-1.1.0", "lamp-2")
    assert (await ota_fleet.get(local(own, second_sha))).content == second.files["app.mpy"]

    counted = (await ota_fleet.get("/api/releases/esp32-1.0.0")).json()
    assert counted["downloads"] == 5  # the 200 and the four 206; refusals and the 416 are not counted
    assert counted["bytes_served"] == len(app) + 1000 + (len(app) - 1000) + 16 + (len(app) - 5000)


def artifact(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def patched(data: bytes, at: int, change: bytes) -> bytes:
    return data[:at] + change + data[at + len(change):]


async def test_pi_deltas_from_the_last_three_releases_of_the_class_give_the_full_file(
        ota_fleet: httpx.AsyncClient, signer: SigningKey) -> None:
    rng = random.Random(11)
    base = artifact(rng, 300_000)  # above FLEET_HTTP_BODY_MAX: the release path takes large bodies
    versions: dict[str, bytes] = {"0.1.0": base}
    for patch_level in range(1, 5):
        previous = versions[f"0.1.{patch_level - 1}"]
        versions[f"0.1.{patch_level}"] = patched(previous, 1000 * patch_level * 37, f"change {patch_level}".encode())
    for version, data in versions.items():
        made = await publish(ota_fleet, ReleaseFolder("pi", version, {"ioc-edge.tar": data}, classes=["pi-armv7"]),
                             signer)
        assert made["deltas_state"] == "pending"  # made after the answer, by the delta worker
    await publish(ota_fleet, ReleaseFolder("pi", "0.1.5", {"ioc-edge.tar": versions["0.1.4"]},
                                           classes=["pi-arm64"]), signer)
    await publish(ota_fleet, ReleaseFolder("pi", "0.2.0", {"ioc-edge.tar": artifact(rng, 300_000)},
                                           classes=["pi-armv7"]), signer)

    async def all_done() -> list[dict[str, Any]] | None:
        listed: list[dict[str, Any]] = (await ota_fleet.get("/api/releases", params={"kind": "pi"})).json()
        return listed if all(r["deltas_state"] == "done" for r in listed) else None

    by_name = {r["name"]: r for r in await async_wait_for(all_done, timeout=60, what="the deltas")}
    assert by_name["pi-arm64-0.1.5"]["deltas"] == []  # no earlier release of its class
    assert by_name["pi-armv7-0.2.0"]["deltas"] == []  # each delta would be over half the file: none kept
    assert by_name["pi-armv7-0.1.0"]["deltas"] == []  # the first of its class
    assert [d["base_release"] for d in by_name["pi-armv7-0.1.1"]["deltas"]] == ["pi-armv7-0.1.0"]

    newest = (await ota_fleet.get("/api/releases/pi-armv7-0.1.4")).json()
    assert sorted(d["base_release"] for d in newest["deltas"]) == ["pi-armv7-0.1.1", "pi-armv7-0.1.2",
                                                                   "pi-armv7-0.1.3"]
    target = versions["0.1.4"]
    assert all(d["size"] <= len(target) // 2 for d in newest["deltas"])

    assert (await ota_fleet.post("/api/devices", json={"id": "cam-1", "kind": "pi"})).status_code == 201
    releases = service(ota_fleet)
    release = await Release.get(name="pi-armv7-0.1.4")
    offer = await releases.build_offer(release, "cam-1", "r2-d1", "install", None, None)
    assert sorted(d["from"] for d in offer["deltas"]) == sorted(d["base_sha256"] for d in newest["deltas"])
    held = hashlib.sha256(versions["0.1.2"]).hexdigest()
    only = await releases.build_offer(release, "cam-1", "r2-d1", "install", None, None, current_sha256=held)
    assert [d["from"] for d in only["deltas"]] == [held]
    assert await releases.deltas_for(release, held) == only["deltas"]
    assert await releases.deltas_for(release, "0" * 64) == []

    delta = only["deltas"][0]
    fetched = await ota_fleet.get(local(offer["url"], delta["sha256"]))
    assert fetched.status_code == 200 and len(fetched.content) == delta["size"]
    rebuilt = bsdiff4.patch(versions["0.1.2"], fetched.content)
    assert rebuilt == target and hashlib.sha256(rebuilt).hexdigest() == release.files[0]["sha256"]
    # a token for an older release does not fetch the newer one's delta
    older = await offer_url(ota_fleet, "pi-armv7-0.1.3", "cam-1")
    assert (await ota_fleet.get(local(older, delta["sha256"]))).status_code == 403


async def test_no_deltas_over_the_size_limit_and_pending_ones_are_made_at_the_next_start(
        database_url: str, mosquitto: Mosquitto, tmp_path: Path, signer: SigningKey) -> None:
    settings = fleet_settings(database_url, mosquitto.url, ota_dir=tmp_path / "ota",
                              ota_keys=write_keys(tmp_path / "keys.pem", signer), ota_delta_file_max=50_000)
    rng = random.Random(12)
    old = artifact(rng, 100_000)
    async with running_fleet(settings) as first:
        for version, data in (("0.3.0", old), ("0.3.1", patched(old, 500, b"fix"))):
            await publish(first, ReleaseFolder("pi", version, {"ioc-edge.tar": data}, classes=["pi-arm64"]), signer)

        async def done() -> bool:
            return bool((await first.get("/api/releases/pi-arm64-0.3.1")).json()["deltas_state"] == "done")

        await async_wait_for(done, what="the worker")
        # the file is over FLEET_OTA_DELTA_FILE_MAX: no delta
        assert (await first.get("/api/releases/pi-arm64-0.3.1")).json()["deltas"] == []
        # as if the fleet had stopped before its worker got to it
        await Release.filter(name="pi-arm64-0.3.1").update(deltas_state="pending")
    again = settings.model_copy(update={"http_port": free_port(), "ota_delta_file_max": 1_000_000})
    async with running_fleet(again) as restarted:
        async def remade() -> list[dict[str, Any]] | None:
            body = (await restarted.get("/api/releases/pi-arm64-0.3.1")).json()
            return body["deltas"] if body["deltas_state"] == "done" else None

        deltas = await async_wait_for(remade, what="the deltas made at the start")
    assert [d["base_release"] for d in deltas] == ["pi-arm64-0.3.0"]
