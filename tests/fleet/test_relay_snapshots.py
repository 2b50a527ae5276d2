"""Snapshots (docs/relay.md, "Snapshots"): a device's upload over HTTP Basic, the store's bounds
and retention, and who may see an image (people with the permission, signed URLs), each audited.
Against the real fleet on SQLite and PostgreSQL."""

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.models import AuditEntry
from fleet.ops.retention import Retention
from fleet.relay.models import Snapshot
from fleet.relay.snapshots import held, snapshot_url
from fleet.settings import Settings
from tests.support.fleet import enroll, fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto

KB = 1024


def jpeg(size: int) -> bytes:
    """A body the store takes as a JPEG (SOI, a marker, random bytes, EOI) of `size` bytes."""
    return b"\xff\xd8\xff\xe0" + os.urandom(size - 6) + b"\xff\xd9"


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def basic(device_id: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{device_id}:{password}".encode()).decode()}


@dataclass
class Fleet:
    http: httpx.AsyncClient  # as the admin
    settings: Settings


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "snapshots"


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto, snapshot_dir: Path) -> AsyncIterator[Fleet]:
    # small bounds so the tests reach them: 1 MiB a device, 1 MiB in all, 512 KiB an upload
    settings = fleet_settings(database_url, mosquitto.url, snapshot_dir=snapshot_dir,
                              snapshot_max_bytes=512 * KB, snapshot_device_max_mb=1, snapshot_store_max_mb=1)
    async with running_fleet(settings) as http:
        yield Fleet(http, settings)


async def put(http: httpx.AsyncClient, device_id: str, password: str, body: bytes,
              digest: str | None = None, path_device: str | None = None) -> httpx.Response:
    return await http.put(f"/api/devices/{path_device or device_id}/snapshots/{digest or sha(body)}",
                          content=body, headers={**basic(device_id, password), "Content-Type": "image/jpeg"})


async def test_upload_answers(fleet: Fleet, device_id: str) -> None:
    admin = fleet.http
    password = (await enroll(admin, device_id, "pi", "ben-nghe"))["password"]
    other = f"{device_id}-b"
    other_password = (await enroll(admin, other, "pi", "ben-nghe"))["password"]
    async with httpx.AsyncClient(base_url=str(admin.base_url), timeout=15) as device:
        image = jpeg(100 * KB)
        path = f"/api/devices/{device_id}/snapshots/{sha(image)}"
        # 401: no credentials, not Basic, a wrong password, an unknown device
        refused = await device.put(path, content=image)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert (await device.put(path, content=image, headers={"Authorization": "Bearer x"})).status_code == 401
        assert (await put(device, device_id, password + "x", image)).status_code == 401
        assert (await put(device, "t-nobody", password, image, path_device=device_id)).status_code == 401
        # 403: another device's path
        assert (await put(device, other, other_password, image, path_device=device_id)).status_code == 403
        # 400: a bad SHA-256 in the path, not a JPEG
        assert (await put(device, device_id, password, image, digest="AB" * 32)).status_code == 400
        assert (await put(device, device_id, password, image, digest="ab" * 31)).status_code == 400
        not_jpeg = b"GIF89a" + os.urandom(1000)
        assert (await put(device, device_id, password, not_jpeg)).status_code == 400
        cut = image[:-2]
        assert (await put(device, device_id, password, cut)).status_code == 400
        # 422: the body is not the image the path names
        assert (await put(device, device_id, password, image, digest=sha(jpeg(KB)))).status_code == 422
        # 413: declared too large (the request guard), and chunked too large (the route counts)
        big = jpeg(512 * KB + 1)
        assert (await put(device, device_id, password, big)).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 64 * KB):
                yield big[start:start + 64 * KB]

        chunked = await device.put(f"/api/devices/{device_id}/snapshots/{sha(big)}", content=chunks(),
                                   headers=basic(device_id, password))
        assert chunked.status_code == 413
        assert not await Snapshot.exists()
        # 201 stored, 200 already held (from any device: stored once)
        stored = await put(device, device_id, password, image)
        assert stored.status_code == 201, stored.text
        assert stored.json() == {"sha256": sha(image), "bytes": len(image), "stored": True}
        file = fleet.settings.snapshot_dir / sha(image)[:2] / f"{sha(image)}.jpg"
        assert file.read_bytes() == image
        assert not [p for p in file.parent.iterdir() if p.name.startswith(".")]  # no temporary left
        again = await put(device, device_id, password, image)
        assert again.status_code == 200 and again.json()["stored"] is False
        assert (await put(device, other, other_password, image)).status_code == 200
        row = await Snapshot.get(sha256=sha(image))
        assert (row.device_id, row.bytes, row.type) == (device_id, len(image), "image/jpeg")

        # a new credential: the old password (cached as a success) stops working at once
        rotated = await admin.post(f"/api/devices/{device_id}/credentials")
        new_password = rotated.json()["mqtt"]["password"]
        assert (await put(device, device_id, password, image)).status_code == 401
        assert (await put(device, device_id, new_password, image)).status_code == 200

        # 403: decommissioned (its credentials revoked with it; its last password still says who it is)
        assert (await admin.post(f"/api/devices/{other}/decommission")).status_code == 200
        retired = await put(device, other, other_password, jpeg(KB))
        assert retired.status_code == 403 and "decommissioned" in retired.json()["detail"]

        # failures are throttled per address like enrollment (10 free, then 429 with Retry-After)
        for _ in range(12):
            answer = await put(device, device_id, "wrong", image)
            if answer.status_code == 429:
                break
            assert answer.status_code == 401
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
        assert (await put(device, device_id, new_password, image)).status_code == 429
        assert await AuditEntry.filter(action="auth.device.throttled").count() == 1


async def test_the_device_share_and_the_store_bound(fleet: Fleet, device_id: str) -> None:
    admin = fleet.http
    password = (await enroll(admin, device_id, "pi", "ben-nghe"))["password"]
    other = f"{device_id}-b"
    other_password = (await enroll(admin, other, "pi", "ben-nghe"))["password"]
    one, two, three, four = (jpeg(400 * KB) for _ in range(4))
    async with httpx.AsyncClient(base_url=str(admin.base_url), timeout=15) as device:
        assert (await put(device, device_id, password, one)).status_code == 201
        assert (await put(device, device_id, password, two)).status_code == 201
        # 800 KiB held + 400 KiB > the device's 1 MiB share
        full = await put(device, device_id, password, three)
        assert full.status_code == 507 and "FLEET_SNAPSHOT_DEVICE_MAX_MB" in full.json()["detail"]
        # another device's image brings the store to 1200 KiB > 1 MiB: the oldest image goes
        assert (await put(device, other, other_password, four)).status_code == 201
        assert not await Snapshot.exists(sha256=sha(one))
        assert not (fleet.settings.snapshot_dir / sha(one)[:2] / f"{sha(one)}.jpg").exists()
        assert await Snapshot.filter(sha256__in=[sha(two), sha(four)]).count() == 2
        # which freed room in the first device's share
        assert (await put(device, device_id, password, three)).status_code == 201
        assert {s async for s in _held()} == {sha(three), sha(four)}


async def _held() -> AsyncIterator[str]:
    for sha256 in await Snapshot.all().values_list("sha256", flat=True):
        yield str(sha256)


async def test_who_sees_a_snapshot(fleet: Fleet, device_id: str) -> None:
    admin = fleet.http
    password = (await enroll(admin, device_id, "pi", "ben-nghe"))["password"]
    image = jpeg(50 * KB)
    digest = sha(image)
    path = f"/api/snapshots/{digest}"
    async with httpx.AsyncClient(base_url=str(admin.base_url), timeout=15) as anyone:
        assert not await held(digest)
        assert (await put(anyone, device_id, password, image)).status_code == 201
        assert await held(digest)
        # people: the snapshots permission (admin, ioc_operator); nobody else
        assert (await anyone.get(path)).status_code == 401
        for role in (Role.READ_ONLY, Role.TECHNICIAN, Role.OPS):
            token = await token_for(admin, role)
            refused = await anyone.get(path, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 403, role
        operator = await token_for(admin, Role.IOC_OPERATOR, "operator-1")
        seen = await anyone.get(path, headers={"Authorization": f"Bearer {operator}"})
        assert seen.status_code == 200 and seen.content == image
        assert seen.headers["content-type"] == "image/jpeg"
        assert seen.headers["etag"] == f'"{digest}"' and seen.headers["cache-control"] == "no-store"
        assert (await admin.get(path)).status_code == 200
        assert (await admin.get(f"/api/snapshots/{sha(jpeg(KB))}")).status_code == 404
        assert (await admin.get("/api/snapshots/not-a-hash")).status_code == 400
        views = await AuditEntry.filter(action="snapshot.view").order_by("id").values_list("actor", "target")
        assert views == [("operator-1", digest), ("admin-test", digest)]  # a refusal or a 404 is no view

        # a signed URL: absolute, for that image, until it expires; audited as the endpoint
        now = datetime.now(UTC)
        url = snapshot_url(fleet.settings, "city-wall", digest, now)
        assert url.startswith(f"{fleet.settings.public_base_url()}/api/snapshots/{digest}?token=")
        fetched = await anyone.get(url.removeprefix(fleet.settings.public_base_url()))
        assert fetched.status_code == 200 and fetched.content == image
        assert fetched.headers["cache-control"] == "no-store"
        fetches = await AuditEntry.filter(action="snapshot.fetch").values_list("actor", "target")
        assert fetches == [("endpoint:city-wall", digest)]
        token = url.partition("?token=")[2]
        # expired: made longer ago than FLEET_SNAPSHOT_URL_TTL_S
        old = snapshot_url(fleet.settings, "city-wall", digest,
                           now - timedelta(seconds=fleet.settings.snapshot_url_ttl_s + 1))
        expired = await anyone.get(old.removeprefix(fleet.settings.public_base_url()))
        assert expired.status_code == 403 and "expired" in expired.json()["detail"]
        # tampered: another endpoint's name, another image, a changed expiry, a changed mac
        name, subject, expires, mac = token.split("~")
        for forged in (f"endpoint:other~{subject}~{expires}~{mac}", f"{name}~{subject}~{int(expires) + 60}~{mac}",
                       f"{name}~{subject}~{expires}~{mac[:-2]}AA", "garbage"):
            assert (await anyone.get(path, params={"token": forged})).status_code == 403, forged
        other = snapshot_url(fleet.settings, "city-wall", sha(jpeg(KB)), now).partition("?token=")[2]
        assert (await anyone.get(path, params={"token": other})).status_code == 403
        # a person's bearer does not rescue a bad token
        assert (await admin.get(path, params={"token": "garbage"})).status_code == 403
        assert await AuditEntry.filter(action="snapshot.fetch").count() == 1


async def test_retention_deletes_old_snapshots(fleet: Fleet, device_id: str) -> None:
    admin = fleet.http
    password = (await enroll(admin, device_id, "pi", "ben-nghe"))["password"]
    old, young = jpeg(10 * KB), jpeg(10 * KB)
    async with httpx.AsyncClient(base_url=str(admin.base_url), timeout=15) as device:
        for body in (old, young):
            assert (await put(device, device_id, password, body)).status_code == 201
    now = datetime.now(UTC)
    days = fleet.settings.retention_snapshots_days
    await Snapshot.filter(sha256=sha(old)).update(received_at=now - timedelta(days=days, seconds=1))
    await Snapshot.filter(sha256=sha(young)).update(received_at=now - timedelta(days=days) + timedelta(minutes=1))
    report = await Retention(fleet.settings).run(now)
    assert report.deleted["snapshot"] == 1
    assert not await held(sha(old)) and await held(sha(young))
    folder = fleet.settings.snapshot_dir
    assert not (folder / sha(old)[:2] / f"{sha(old)}.jpg").exists()
    assert (folder / sha(young)[:2] / f"{sha(young)}.jpg").exists()
    assert (await admin.get(f"/api/snapshots/{sha(old)}")).status_code == 404
    assert (await Retention(fleet.settings).run(now)).deleted["snapshot"] == 0
