"""Several fleet instances on one PostgreSQL and one broker (docs/fleet.md, "Several instances"):
three real `fleet serve` processes share the ingest through `$share/…` and the scheduled work; the
one holding the leases is SIGKILLed in the middle of a rollout's first phase (the others take its
leases) and started again (its broker session holds its share of the devices' messages). Each
thing is done once: messages stored, relayed events, offers per device, phase advances, expired
commands, an alert and its notification, a broadcast's document per speaker. Real Mosquitto, real
PostgreSQL, real receivers."""

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import httpx
import pytest

from fleet.auth.people import create_user
from fleet.auth.roles import Role
from fleet.db import database
from fleet.models import AuditEntry, Command, Device, DeviceStatus, Lease, TelemetryRecord
from fleet.ops.models import Alert, AlertEvent, AlertRule, Notification, NotificationChannel, Severity
from fleet.ops.webhook_sign import new_secret
from fleet.ota.rollouts import RolloutEngine
from fleet.relay.models import DeliveryStatus, EndpointKind, RelayDelivery, RelayEndpoint, RelayRoute
from fleet.runtime import Runtime
from fleet.settings import Settings
from fleet.tasks import stop_tasks
from tests.fleet import notify_kit, relay_kit
from tests.fleet.release_kit import TAR, ReleaseFolder, SigningKey, write_keys
from tests.fleet.rollout_kit import lights, publish_release, register, rollout_fleet, wait_online
from tests.fleet.test_broadcast_delivery import born, desired, speaker
from tests.fleet.test_broadcast_delivery import clip as tts_clip
from tests.support.device import ScriptedDevice
from tests.support.fleet import ADMIN, ADMIN_PASSWORD
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.ota_updaters import OFFER_FILTER, Herd, SimDevice, herd
from tests.support.postgres import fresh_database
from tests.support.wait import async_wait_for, wait_for

pytestmark = pytest.mark.postgres
__all__ = ["rollout_fleet"]  # a fixture

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 3
LEASE_S = 2
STREAMS, PER_STREAM = 3, 60  # telemetry through the shared subscription
EVENTS = 8  # relayed
COMMANDS = 30  # expired
SPEAKERS = 4  # a broadcast's targets
LIGHTS = 8  # in the rollout: phases [25, 100] = 2, then 6 more
REBOOT_PAUSE_S = 0.5  # a simulated light's pause after its reboot's birth (see SpacedHerd)


class Instance:
    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log = workdir / f"{name}.log"
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "serve", "--port", str(self.port)],
                                     cwd=workdir, env={**env, "FLEET_INSTANCE_ID": name,
                                                       "FLEET_MQTT_CLIENT_ID": f"fleet-{name}"},
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def answering(self) -> bool:
        assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def holder(name: str) -> str | None:
    row = await Lease.get_or_none(name=name)
    return row.holder if row is not None and row.until > datetime.now(UTC) else None


async def turns_of(name: str, n: int) -> None:
    """Wait until the lease `name` has been renewed `n` more times: its holder ran n more turns."""
    seen: list[datetime] = []

    async def renewed() -> bool:
        row = await Lease.get(name=name)
        if not seen or row.until > seen[-1]:
            seen.append(row.until)
        return len(seen) > n

    await async_wait_for(renewed, timeout=30, interval=0.05, what=f"{n} turns of {name}")


async def test_three_instances_do_each_thing_once_and_survive_a_kill(tmp_path: Path, mosquitto: Mosquitto,
                                                                     signer: SigningKey) -> None:
    keys = write_keys(tmp_path / "release-keys.pem", signer)
    with relay_kit.webhook_receiver() as relayed, notify_kit.webhook_receiver() as hook:
        async with fresh_database() as url:
            settings = Settings(database_url=url, broker_accounts="none", snapshot_dir=tmp_path / "snapshots")
            async with database(settings):
                await run(tmp_path, url, mosquitto, signer, keys, relayed, hook)


async def run(tmp_path: Path, url: str, mosquitto: Mosquitto, signer: SigningKey, keys: Path,
              relayed: relay_kit.Receiver, hook: notify_kit.Hook) -> None:
    # -- what the instances find in the database ------------------------------------------------
    await create_user(ADMIN, ADMIN_PASSWORD, Role.ADMIN)
    secret = new_secret()
    relayed.secrets.append(secret)
    endpoint = await RelayEndpoint.create(name="ioc-wall", kind=EndpointKind.WEBHOOK, url=relayed.url, secret=secret,
                                          retry_base_s=0.2)
    await RelayRoute.create(name="ward-events", endpoint=endpoint, wards=["event-ward"])
    await NotificationChannel.create(name="ioc-alerts", kind="webhook", target={"url": hook.url}, secret=new_secret(),
                                     min_severity=Severity.WARNING)
    rule = await AlertRule.create(name="alarm-ward offline", kind="offline", ward="alarm-ward",
                                  severity=Severity.MAJOR, params={"for_s": 0}, channels=["ioc-alerts"])
    streams = [f"tele-{i}" for i in range(STREAMS)]
    for device_id, ward in [*((s, "tele-ward") for s in streams), ("cam-1", "event-ward"), ("victim-1", "alarm-ward")]:
        await Device.create(id=device_id, kind="pi", ward=ward, status=DeviceStatus.ACTIVE)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_DATABASE_URL": url, "FLEET_MQTT_URL": mosquitto.url,
           "FLEET_MQTT_SHARED_GROUP": "ioc-fleet", "FLEET_BROKER_ACCOUNTS": "none", "FLEET_LEASE_S": str(LEASE_S),
           "FLEET_OPS_TICK_S": "0.3", "FLEET_OTA_DIR": str(tmp_path / "ota"), "FLEET_OTA_KEYS": str(keys),
           "FLEET_PUBLIC_URL": "http://fleet.example:8000", "FLEET_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
           "FLEET_AUDIO_DIR": str(tmp_path / "audio")}

    started: list[Instance] = []
    try:
        for i in range(INSTANCES):
            started.append(Instance(f"inst-{i}", tmp_path, env))
            await answering(started[-1])
            if i == 0:  # the first takes the leases (the one killed below holds them)
                await async_wait_for(inst0_holds, timeout=30, what="inst-0's leases")
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{started[1].port}", timeout=15)
        async with http:
            login = await http.post("/api/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
            http.headers["Authorization"] = f"Bearer {login.raise_for_status().json()['token']}"
            await shared_ingest(mosquitto, streams)
            await relay_once(mosquitto, relayed)
            await rollout_through_a_kill(http, mosquitto, signer, started)
            await commands_expire_once()
            await alert_once(mosquitto, rule, hook)
            await broadcast_once(http, mosquitto)
    finally:
        for instance in started:
            await asyncio.to_thread(instance.stop)


async def inst0_holds() -> bool:
    return await holder("rollouts") == "inst-0"


async def restarted(killed: Instance) -> Instance:
    """Started again as systemd's Restart=always would: again if it exits while starting (its
    generate_schemas can deadlock against the running instances' writes; migrations replace it)."""
    async def up_or_exited(instance: Instance) -> bool:
        try:
            return await asyncio.to_thread(instance.answering)
        except AssertionError:  # it exited
            return True

    for _ in range(3):
        again = Instance(killed.name, killed.log.parent, killed.env)
        await async_wait_for(functools.partial(up_or_exited, again), timeout=60, interval=0.1,
                             what=f"{killed.name} restarted")
        if again.proc.poll() is None:
            return again
    raise AssertionError(f"{killed.name} did not start again: {killed.log.read_text()[-3000:]}")


async def answering(instance: Instance) -> None:
    async def up() -> bool:
        return await asyncio.to_thread(instance.answering)
    await async_wait_for(up, timeout=60, interval=0.1, what=f"{instance.name} answering")


async def shared_ingest(mosquitto: Mosquitto, streams: list[str]) -> None:
    """Telemetry of a few devices, spread by the broker over the three instances: each message stored once."""
    def publish() -> None:
        devices = [ScriptedDevice(mosquitto.port, d, ses=7, will=False) for d in streams]
        try:
            for n in range(PER_STREAM):
                for device in devices:
                    device.telemetry(lux=float(n))
        finally:
            for device in devices:
                device.client.disconnect()
                device.client.loop_stop()
    await asyncio.to_thread(publish)

    async def stored() -> bool:
        return await TelemetryRecord.filter(device_id__in=streams).count() >= STREAMS * PER_STREAM
    await async_wait_for(stored, timeout=60, what="every telemetry message stored")
    rows = await TelemetryRecord.filter(device_id__in=streams).values_list("device_id", "seq")
    assert Counter(rows) == Counter({(d, n): 1 for d in streams for n in range(PER_STREAM)})


async def relay_once(mosquitto: Mosquitto, relayed: relay_kit.Receiver) -> None:
    """Events relayed by whichever instance claims them: each event once."""
    def publish() -> None:
        cam = ScriptedDevice(mosquitto.port, "cam-1", ses=3, will=False)
        try:
            for _ in range(EVENTS):
                relay_kit.event(cam)
        finally:
            cam.client.disconnect()
            cam.client.loop_stop()
    await asyncio.to_thread(publish)

    async def delivered() -> bool:
        return (len({c.id for c in relayed.calls}) >= EVENTS
                and await RelayDelivery.filter(status=DeliveryStatus.DELIVERED).count() == EVENTS)
    await async_wait_for(delivered, timeout=60, what="every event relayed")
    assert len(relayed.calls) == EVENTS and all(c.verified_with for c in relayed.calls)
    assert sorted(c.json()["data"]["stream"]["seq"] for c in relayed.calls) == list(range(EVENTS))


async def rollout_through_a_kill(http: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey,
                                 started: list[Instance]) -> None:
    """The instance running the rollout engine is killed while the first phase's offers are out;
    another takes the lease and finishes: each device offered once, each phase passed once."""
    folder = ReleaseFolder("esp32", "0.2.0", {"app.mpy": b"app 0.2.0" * 20})
    made = await http.post("/api/releases", content=folder.tar(folder.signed(signer)), headers=TAR)
    assert made.status_code == 201, made.text
    release = str(made.json()["name"])
    devices = lights("inst-l", LIGHTS)
    for device in devices:
        got = await http.post("/api/devices", json={"id": device.device_id, "kind": "esp32", "ward": "tan-phu"})
        assert got.status_code == 201, got.text
    async with spaced_herd(mosquitto.port, devices) as flock:
        async def online() -> bool:
            return await Device.filter(id__in=[d.device_id for d in devices], online=True).count() == LIGHTS
        await async_wait_for(online, timeout=30, what="the lights online")
        flock.go.clear()  # offers are held unanswered: the first phase is in flight at the kill
        made = await http.post("/api/rollouts", json={"release": release, "phases": [25, 100], "soak_s": 0.5,
                                                      "offers_per_min": 10_000})
        assert made.status_code == 201, made.text
        rollout_id = int(made.json()["id"])

        async def first_phase_offered() -> bool:
            return flock.offers_seen >= 2
        await async_wait_for(first_phase_offered, timeout=30, what="the first phase's offers")
        running = await holder("rollouts")
        killed = next(i for i in started if i.name == running)
        killed.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(killed.proc.wait, 10)
        await make_commands()  # due while the lease holder is dead: the others take them
        flock.go.set()

        async def taken_over() -> bool:
            return await holder("rollouts") not in (None, killed.name)
        await async_wait_for(taken_over, timeout=30, what="another instance holding the rollouts' lease")
        # restarted as systemd would (Restart=always), with its client id: the broker kept its
        # session, and its share of the devices' messages waits there for it (docs/fleet.md)
        started[started.index(killed)] = await restarted(killed)

        async def done() -> bool:
            got = await http.get(f"/api/rollouts/{rollout_id}")
            return bool(got.json()["status"] == "done")
        try:
            await async_wait_for(done, timeout=60, interval=0.2, what="the rollout done after the kill")
        except TimeoutError:
            rows = (await http.get(f"/api/rollouts/{rollout_id}/devices")).json()
            print((await http.get(f"/api/rollouts/{rollout_id}")).json()["counts"],
                  [(r["device_id"], r["state"], r["phase"]) for r in rows], flock.errors,
                  {d.device_id: (len(d.offers), d.answered) for d in devices}, sep="\n")
            raise
    assert flock.errors == []
    assert {d.device_id: len(d.offers) for d in devices} == {d.device_id: 1 for d in devices}
    decisions = Counter(await AuditEntry.filter(target=str(rollout_id), actor="rollout-engine")
                        .values_list("action", flat=True))
    assert decisions == Counter({"rollout.phase": 1, "rollout.done": 1})


class SpacedHerd(Herd):
    """Devices that take a moment after a reboot's birth before their next report. With a shared
    subscription the broker spreads one device's messages over the instances, which store them
    concurrently: a birth and the report right behind it may be stored in either order (a
    limit of the ingest, docs/fleet.md "Several instances")."""

    async def reboot(self, device: SimDevice, boots: int) -> None:
        await super().reboot(device, boots)
        await asyncio.sleep(REBOOT_PAUSE_S)


@asynccontextmanager
async def spaced_herd(port: int, devices: list[SimDevice]) -> AsyncIterator[Herd]:
    client = aiomqtt.Client("127.0.0.1", port, identifier=f"herd-{uuid.uuid4().hex[:8]}",
                            max_queued_incoming_messages=0)
    await client.__aenter__()
    tasks: list[asyncio.Task[None]] = []
    try:
        flock = SpacedHerd(client, devices, step_s=0.05)
        for device in devices:
            await flock.birth(device)
        await client.subscribe(OFFER_FILTER, qos=1)
        tasks = [asyncio.create_task(flock.listen()), asyncio.create_task(flock.beat())]
        yield flock
    finally:
        left = await stop_tasks((*tasks, *flock._tasks))  # aiomqtt can lose a cancellation (fleet/tasks.py)
        assert not left, f"the herd's tasks did not stop: {left}"
        # aiomqtt's exit waited for ever once here, with the broker still holding the connection
        with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
            await asyncio.wait_for(client.__aexit__(None, None, None), 10)


async def make_commands() -> None:
    expires_ms = int(time.time() * 1000) + 500
    await Command.bulk_create([Command(id=uuid.uuid4().hex, device_id="victim-1", name="reboot", args={},
                                       expires_ms=expires_ms) for _ in range(COMMANDS)])


async def commands_expire_once() -> None:
    async def expired() -> bool:
        return await Command.filter(device_id="victim-1", status="expired").count() == COMMANDS
    await async_wait_for(expired, timeout=30, what="the commands expired")
    entries: list[dict[str, str]] = await AuditEntry.filter(action="command.expired").values_list(  # type: ignore[assignment]
        "detail", flat=True)
    ids = await Command.filter(device_id="victim-1").values_list("id", flat=True)
    assert Counter(e["id"] for e in entries) == Counter({i: 1 for i in ids})


async def alert_once(mosquitto: Mosquitto, rule: AlertRule, hook: notify_kit.Hook) -> None:
    """A device goes offline: one alert, one event, one message to the channel."""
    def born_then_dead() -> None:
        victim = ScriptedDevice(mosquitto.port, "victim-1", ses=5, will=False)
        try:
            victim.birth()
            wait_for(lambda: asyncio.run_coroutine_threadsafe(_online("victim-1"), loop).result(10),
                     timeout=30, what="victim-1 online")
            victim.death()
        finally:
            victim.client.disconnect()
            victim.client.loop_stop()
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(born_then_dead)
    async def notified() -> bool:
        return len(hook.calls) >= 1
    await async_wait_for(notified, timeout=30, what="the alert's notification")
    await turns_of("alerts", 3)  # the alert rules' holder judged the device again, three times
    assert await Alert.filter(rule_id=rule.id).count() == 1
    assert await AlertEvent.filter(alert__rule_id=rule.id).count() == 1
    assert await Notification.all().count() == 1
    assert len(hook.calls) == 1


async def _online(device_id: str) -> bool:
    return await Device.filter(id=device_id, online=True).exists()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_engines_at_once_offer_each_device_once(rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                                          signer: SigningKey) -> None:
    """Two rollout engines tick at the same moment (what two instances' engines do when the lease
    is lost mid-turn): the rows each offers are claimed with SKIP LOCKED, so no device gets two."""
    http = rollout_fleet
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    own = next(t for t in asyncio.all_tasks() if t.get_name() == "fleet-rollouts")
    own.cancel()  # the fleet's own engine stays out: the two below race
    with contextlib.suppress(asyncio.CancelledError):
        await own
    release = await publish_release(http, signer, "0.3.0")
    devices = lights("two-eng", 40)
    await register(http, devices)
    async with herd(mosquitto.port, devices) as flock:
        flock.go.clear()  # offers are received, not answered
        await wait_online(http, devices)
        made = await http.post("/api/rollouts", json={"release": release, "phases": [100],
                                                      "offers_per_min": 10_000})
        assert made.status_code == 201, made.text
        engines = [RolloutEngine(runtime.link, runtime.settings) for _ in range(2)]
        await asyncio.gather(*(e.tick() for e in engines))

        async def all_offered() -> bool:
            return flock.offers_seen >= len(devices)
        await async_wait_for(all_offered, what="every device offered")
        assert sum(e.offers_sent for e in engines) == len(devices)
        assert {d.device_id: len(d.offers) for d in devices} == {d.device_id: 1 for d in devices}


async def broadcast_once(http: httpx.AsyncClient, mosquitto: Mosquitto) -> None:
    """A broadcast saved on one instance reaches each speaker as one desired-state document, whichever
    instance's delivery claims it (the others skip the claimed speakers)."""
    names = [f"spk-{i}" for i in range(SPEAKERS)]
    for name in names:
        got = await http.post("/api/devices", json={"id": name, "kind": "esp32", "ward": "speaker-ward"})
        assert got.status_code == 201, got.text
    made = await tts_clip(http)
    with contextlib.ExitStack() as stack:
        speakers = [stack.enter_context(speaker(mosquitto, name)) for name in names]
        for name in names:
            await born(name)
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        saved = await http.post("/api/broadcasts", json={
            "title": "ward meeting", "clip_id": made["id"], "targets": {"wards": ["speaker-ward"]},
            "start": tomorrow.replace(tzinfo=None, microsecond=0).isoformat()})
        assert saved.status_code == 201, saved.text

        async def all_delivered() -> bool:
            return all(desired(s) is not None for s in speakers)
        await async_wait_for(all_delivered, timeout=30, what="every speaker's document")
        await turns_of("broadcast.clocks", 3)  # the broadcasts worker turned again, three times
        docs = {s.device_id: [b["version"] for t, b in list(s.received) if t.endswith("/state/desired")]
                for s in speakers}
    assert docs == {name: [1] for name in names}
    assert [d.desired_version for d in await Device.filter(id__in=names)] == [1] * SPEAKERS

