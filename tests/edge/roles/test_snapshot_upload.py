"""Snapshots from the Pi to the fleet (docs/relay.md, "The Pi's side"): the real uploader and
snapshot store against the real fleet (uvicorn, SQLite, a private Mosquitto), as an enrolled device
with the password the fleet issued. Uploads arrive (the fleet checks their SHA-256) and leave the Pi;
over https the fleet's certificate is checked against `ca_file`;
a changed file or a non-JPEG is refused and deleted; a wrong password keeps the images and backs
off; with the fleet stopped the store's bound holds and the images arrive when it is back; and the
camera role in the agent gets an event and its snapshot to the fleet through a broker and a link
outage at once."""

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.agent import Agent
from edge.backoff import Backoff
from edge.config import FleetSettings
from edge.fleet_http import FleetHttp
from edge.roles.camera import CameraRole
from edge.roles.camera.snapshots import SnapshotStore
from edge.roles.camera.upload import SnapshotUploader
from edge.vision.jpeg import encode_jpeg
from fleet.relay.models import Snapshot
from fleet.settings import Settings
from tests.edge.helpers import ConfigFactory, until
from tests.edge.roles.camera_fixtures import street_fixture  # noqa: F401
from tests.edge.roles.test_camera_role import Street, camera_section, clip  # noqa: F401
from tests.support.fleet import enroll, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.tls import make_tls
from tests.support.wait import async_wait_for

LOG = logging.getLogger("tests.snapshot_upload")


@pytest.fixture
def settings(tmp_path: Path, mosquitto: Mosquitto) -> Settings:
    return fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url,
                          snapshot_dir=tmp_path / "fleet-snapshots")


def jpegs(street: Street, count: int) -> list[bytes]:
    """Distinct real JPEGs: frames of bikes.mp4 as the camera role encodes them."""
    _, frames = street
    return [encode_jpeg(frames[i * 7], max_width=320, quality=70) for i in range(count)]


def fleet_http(settings: Settings, device_id: str, password: str) -> FleetHttp:
    fleet = FleetSettings(url=f"http://127.0.0.1:{settings.http_port}", backoff_min_s=0.05, backoff_max_s=0.4)
    return FleetHttp(fleet, device_id, password)


def store_in(folder: Path, max_files: int = 100) -> SnapshotStore:
    return SnapshotStore(folder, ref_prefix="snap/test", max_bytes=64 * 1024 * 1024, max_files=max_files)


@contextlib.asynccontextmanager
async def uploading(uploader: SnapshotUploader) -> AsyncIterator[None]:
    task = asyncio.create_task(uploader.run(), name="test-upload")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def held(http: httpx.AsyncClient, sha256: str) -> bytes | None:
    """The image as the fleet serves it to an admin, or None when it does not hold it."""
    answer = await http.get(f"/api/snapshots/{sha256}")
    assert answer.status_code in (200, 404), answer.text
    return answer.content if answer.status_code == 200 else None


class RecordingBackoff(Backoff):
    def __init__(self, minimum: float, maximum: float) -> None:
        super().__init__(minimum, maximum)
        self.delays: list[float] = []
        self.resets = 0

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.delays.append(delay)
        return delay

    def reset(self) -> None:
        super().reset()
        self.resets += 1


async def test_snapshots_reach_the_fleet_oldest_first_and_leave_the_pi(
        settings: Settings, device_id: str, street: Street, tmp_path: Path) -> None:
    images = jpegs(street, 3)
    async with running_fleet(settings) as http:
        password = (await enroll(http, device_id, "pi", ""))["password"]
        store = store_in(tmp_path / "pi-snapshots")
        uploader = SnapshotUploader(store, fleet_http(settings, device_id, password), log=LOG)
        async with uploading(uploader):
            # the uploader waits for the store: each new snapshot wakes it
            refs = [store.put(f"mot-cam1-x-{n}.jpg", image) for n, image in enumerate(images)]
            await until(lambda: uploader.uploaded == 3 and len(store) == 0, "three uploads")
            for ref, image in zip(refs, images, strict=True):
                assert await held(http, ref["sha256"]) == image
            rows = await Snapshot.filter(device_id=device_id).order_by("received_at")
            assert [row.sha256 for row in rows] == [ref["sha256"] for ref in refs]  # oldest first
            assert [row.bytes for row in rows] == [len(image) for image in images]

            again = store.put("mot-cam1-x-again.jpg", images[0])  # the fleet holds it: 200, deleted too
            await until(lambda: uploader.uploaded == 4 and len(store) == 0, "the same image again")
            assert again["sha256"] == refs[0]["sha256"]
    assert list(store.folder.iterdir()) == []
    assert store.total_bytes == 0 and store.removed == 4 and store.deleted == 0
    assert uploader.figures() == {"uploaded": 4, "upload_errors": 0, "upload_refused": 0, "upload_pending": 0}


@contextlib.asynccontextmanager
async def tls_front(cert: Path, key: Path, backend_port: int) -> AsyncIterator[int]:
    """A TLS terminator on loopback in front of the fleet (as a reverse proxy would be): its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        back_r, back_w = await asyncio.open_connection("127.0.0.1", backend_port)
        await asyncio.gather(pipe(client_r, back_w), pipe(back_r, client_w))

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    try:
        yield port
    finally:
        server.close()


async def test_over_https_the_fleets_certificate_must_chain_to_ca_file(
        settings: Settings, device_id: str, street: Street, tmp_path: Path) -> None:
    right, wrong = make_tls(tmp_path / "tls"), make_tls(tmp_path / "other-tls")
    image, = jpegs(street, 1)
    async with running_fleet(settings) as http, tls_front(right.cert, right.key, settings.http_port) as port:
        password = (await enroll(http, device_id, "pi", ""))["password"]
        store = store_in(tmp_path / "pi-snapshots")
        ref = store.put("over-tls.jpg", image)

        def over_https(ca: Path) -> FleetHttp:
            return FleetHttp(FleetSettings(url=f"https://127.0.0.1:{port}/", ca_file=ca, backoff_min_s=0.05,
                                           backoff_max_s=0.4), device_id, password)

        uploader = SnapshotUploader(store, over_https(wrong.ca), log=LOG)  # another CA: nothing is sent
        async with uploading(uploader):
            await until(lambda: uploader.errors >= 2, "refused handshakes")
            assert len(store) == 1 and await held(http, ref["sha256"]) is None
            uploader.fleet = over_https(right.ca)
            await until(lambda: uploader.uploaded == 1 and len(store) == 0, "the upload over https")
        assert await held(http, ref["sha256"]) == image


async def test_a_changed_file_and_a_non_jpeg_are_refused_deleted_and_counted(
        settings: Settings, device_id: str, street: Street, tmp_path: Path) -> None:
    changed, good = jpegs(street, 2)
    async with running_fleet(settings) as http:
        password = (await enroll(http, device_id, "pi", ""))["password"]
        store = store_in(tmp_path / "pi-snapshots")
        uploader = SnapshotUploader(store, fleet_http(settings, device_id, password), log=LOG)
        bad = store.put("changed.jpg", changed)
        file = store.folder / "changed.jpg"
        damaged = bytearray(file.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF  # an SD-card fault after the store wrote it: 422 at the fleet
        file.write_bytes(bytes(damaged))
        store.put("garbage.jpg", b"this is no JPEG at all")  # 400
        ok = store.put("good.jpg", good)
        async with uploading(uploader):
            await until(lambda: len(store) == 0, "the store emptied")
        assert uploader.figures() == {"uploaded": 1, "upload_errors": 0, "upload_refused": 2, "upload_pending": 0}
        assert await held(http, bad["sha256"]) is None
        assert await held(http, ok["sha256"]) == good
        assert await Snapshot.filter(device_id=device_id).count() == 1
    assert list(store.folder.iterdir()) == []


async def test_a_wrong_password_keeps_the_images_and_backs_off_until_it_is_right(
        settings: Settings, device_id: str, street: Street, tmp_path: Path) -> None:
    first, second = jpegs(street, 2)
    async with running_fleet(settings) as http:
        password = (await enroll(http, device_id, "pi", ""))["password"]
        store = store_in(tmp_path / "pi-snapshots")
        backoff = RecordingBackoff(0.05, 0.4)
        uploader = SnapshotUploader(store, fleet_http(settings, device_id, "not-the-password"), log=LOG,
                                    backoff=backoff)
        refs = [store.put("first.jpg", first)]
        async with uploading(uploader):
            await until(lambda: uploader.errors >= 3, "three refused log-ins (401)")
            refs.append(store.put("second.jpg", second))  # a new snapshot does not reset the backoff
            await until(lambda: uploader.errors >= 5, "two more")
            assert len(store) == 2 and uploader.uploaded == 0 and backoff.resets == 0
            for n, delay in enumerate(backoff.delays):  # 0.05 s doubling to 0.4 s, each in [d/2, d]
                ceiling = min(0.4, 0.05 * 2**n)
                assert ceiling / 2 <= delay <= ceiling, (n, delay)
            assert max(backoff.delays) > 0.2  # the ceiling was reached: no reset came with the new snapshot
            uploader.fleet = fleet_http(settings, device_id, password)  # e.g. the right password restored
            await until(lambda: uploader.uploaded == 2 and len(store) == 0, "both uploaded, oldest first")
        assert backoff.resets >= 1
        rows = await Snapshot.filter(device_id=device_id).order_by("received_at")
        assert [row.sha256 for row in rows] == [ref["sha256"] for ref in refs]
        assert uploader.figures()["upload_errors"] == uploader.errors >= 5


async def test_with_the_fleet_stopped_the_store_bound_holds_and_the_images_arrive_when_it_is_back(
        settings: Settings, device_id: str, street: Street, tmp_path: Path) -> None:
    images = jpegs(street, 6)
    async with running_fleet(settings) as http:
        password = (await enroll(http, device_id, "pi", ""))["password"]
    # the fleet is stopped: nothing listens on its port
    store = store_in(tmp_path / "pi-snapshots", max_files=3)
    uploader = SnapshotUploader(store, fleet_http(settings, device_id, password), log=LOG)
    async with uploading(uploader):
        refs = [store.put(f"s{n}.jpg", image) for n, image in enumerate(images[:5])]
        await until(lambda: uploader.errors >= 2, "failed attempts while the fleet is down")
        assert len(store) == 3 and store.deleted == 2 and uploader.uploaded == 0  # the bound: oldest deleted
        assert sorted(p.name for p in store.folder.iterdir()) == ["s2.jpg", "s3.jpg", "s4.jpg"]
        async with running_fleet(settings) as http:
            await until(lambda: uploader.uploaded == 3 and len(store) == 0, "the kept images after the restart")
            for ref in refs[:2]:
                assert await held(http, ref["sha256"]) is None
            for ref, image in zip(refs[2:], images[2:5], strict=True):
                assert await held(http, ref["sha256"]) == image
        # stopped again, one more image, started again: it waits, then arrives
        last = store.put("s5.jpg", images[5])
        errors = uploader.errors
        await until(lambda: uploader.errors > errors, "a failed attempt with the fleet stopped again")
        assert len(store) == 1
        async with running_fleet(settings) as http:
            await until(lambda: uploader.uploaded == 4 and len(store) == 0, "the last image")
            assert await held(http, last["sha256"]) == images[5]
    assert uploader.refused == 0


async def test_an_event_and_its_snapshot_reach_the_fleet_through_a_broker_and_link_outage(
        settings: Settings, edge_config: ConfigFactory, mosquitto: Mosquitto, device_id: str, clip: Path,  # noqa: F811
        tmp_path: Path) -> None:
    async with running_fleet(settings) as http:
        password = (await enroll(http, device_id, "pi", ""))["password"]
    await asyncio.to_thread(mosquitto.stop)  # the broker is down and the fleet's HTTP too
    config = edge_config(
        roles={"camera": camera_section(clip)},
        broker={"username": device_id, "password": password},
        fleet={"url": f"http://127.0.0.1:{settings.http_port}", "backoff_min_s": 0.05, "backoff_max_s": 0.5},
    )
    async with Agent(config) as agent:
        role = agent.roles["camera"]
        assert isinstance(role, CameraRole) and role.uploader is not None
        uploader = role.uploader
        camera = role.cameras["junction-1"]
        await until(lambda: camera.source.finished and role.events_sent >= 4 and uploader.errors >= 1,
                    "the clip's events and snapshots, offline")
        assert not agent.link.connected.is_set()
        assert agent.outbox.depth >= role.events_sent  # the events wait in the queue ...
        kept = {hashlib.sha256(p.read_bytes()).hexdigest() for p in role.store.folder.glob("*.jpg")}
        assert len(kept) == 2 and len(role.store) == 2 and uploader.uploaded == 0  # ... the snapshots in the store
        assert role.health()["upload_pending"] == 2

        await asyncio.to_thread(mosquitto.start)
        async with running_fleet(settings) as http:
            async def stored_events() -> list[dict[str, Any]] | None:
                answer = await http.get(f"/api/devices/{device_id}/events")
                rows = [e for e in answer.json() if e.get("snapshot")] if answer.status_code == 200 else []
                return rows if len({e["snapshot"]["sha256"] for e in rows}) == 2 else None

            rows = await async_wait_for(stored_events, timeout=30, what="the events with snapshots at the fleet")
            assert rows is not None and {e["snapshot"]["sha256"] for e in rows} == kept
            await until(lambda: uploader.uploaded == 2 and len(role.store) == 0, "the snapshots uploaded")
            for sha256 in kept:
                image = await held(http, sha256)
                assert image is not None and hashlib.sha256(image).hexdigest() == sha256
        figures = role.health()
    assert figures["uploaded"] == 2 and figures["upload_pending"] == 0 and figures["upload_refused"] == 0
    assert list((tmp_path / "state" / "snapshots").glob("*.jpg")) == []



async def test_a_throttled_device_waits_the_fleets_retry_after(
        settings: Settings, device_id: str, street: Street, tmp_path: Path) -> None:
    """After failed log-ins the fleet answers 429 with Retry-After: the uploader keeps the image and
    takes that wait (bounded) instead of its shorter backoff."""
    (image,) = jpegs(street, 1)
    async with running_fleet(settings) as http:
        await enroll(http, device_id, "pi", "")
        store = store_in(tmp_path / "pi-snapshots")
        uploader = SnapshotUploader(store, fleet_http(settings, device_id, "not-the-password"), log=LOG)
        store.put("first.jpg", image)
        path, sha256 = store.oldest() or (None, None)
        assert path is not None
        for _ in range(30):  # the fleet's device-login throttle (docs/identity.md) starts within these
            await asyncio.to_thread(uploader.upload_one, path, sha256)
            if uploader._retry_after_s is not None:
                break
        assert uploader._retry_after_s is not None and uploader._retry_after_s >= 1, "no Retry-After came"
        assert len(store) == 1 and uploader.uploaded == 0 and uploader.refused == 0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from edge.fleet_http import retry_after
    assert retry_after("120") == 120.0
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    value = retry_after(later)
    assert value is not None and 80 <= value <= 90
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=90), usegmt=True)
    assert retry_after(past) == 0.0
