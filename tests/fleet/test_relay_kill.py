"""A fleet killed (SIGKILL) while a slow receiver holds a relayed message, then started again
(docs/relay.md, "Retries, order, and the bounds": at least once): nothing is lost, the message in
flight is sent again with the same `webhook-id`, and deduped on it the receiver has every event
exactly once, in order. A real `fleet serve` process, real Mosquitto, a real receiver."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fleet.db import database
from fleet.models import Device, DeviceStatus
from fleet.ops.webhook_sign import new_secret
from fleet.relay.models import EndpointKind, RelayEndpoint, RelayRoute
from fleet.settings import Settings
from tests.fleet.relay_kit import webhook_receiver
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 6


def serve(workdir: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = (workdir / "fleet.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "serve", "--port", str(port)], cwd=workdir,
                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def answering() -> bool:
        assert proc.poll() is None, f"fleet serve exited {proc.returncode}: {(workdir / 'fleet.log').read_text()}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answering, timeout=60, interval=0.1, what="fleet serve answering")
    return proc


async def prepare(settings: Settings, device_id: str, url: str, secret: str) -> None:
    async with database(settings):
        await Device.create(id=device_id, kind="pi", ward="ben-nghe", status=DeviceStatus.ACTIVE)
        endpoint = await RelayEndpoint.create(name="ioc-wall", kind=EndpointKind.WEBHOOK, url=url, secret=secret,
                                              timeout_s=4.0, retry_base_s=0.2)
        await RelayRoute.create(name="everything", endpoint=endpoint)


def test_killed_mid_delivery_nothing_lost_each_event_once(tmp_path: Path, mosquitto: Mosquitto,
                                                          device_id: str) -> None:
    database_url = f"sqlite://{tmp_path / 'fleet.sqlite3'}"
    secret = new_secret()
    with webhook_receiver(secret) as receiver:
        asyncio.run(prepare(Settings(database_url=database_url, snapshot_dir=tmp_path / "snapshots"), device_id,
                            receiver.url, secret))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_DATABASE_URL": database_url,
               "FLEET_MQTT_URL": mosquitto.url, "FLEET_MQTT_CLIENT_ID": f"fleet-kill-{device_id}",
               "FLEET_BROKER_ACCOUNTS": "none", "FLEET_SNAPSHOT_DIR": str(tmp_path / "snapshots")}
        receiver.delay_s = 1.0  # slow: each call is held a second before its answer
        port = free_port()
        proc = serve(tmp_path, env, port)
        dev = ScriptedDevice(mosquitto.port, device_id, ses=41, will=False)
        try:
            for i in range(EVENTS):
                dev.send("event", id=f"mot-{i}", type="motion", phase="start", category="security", data={"i": i})
            wait_for(lambda: len(receiver.calls) >= 2, timeout=30, what="two events delivered")
            time.sleep(0.3)  # the third is in flight now, held by the slow receiver
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            before = len(receiver.calls)
            time.sleep(1.0)  # the receiver finishes the call the fleet will never hear answered
            assert len(receiver.calls) == before + 1 < EVENTS + 1
            receiver.delay_s = 0.0
            proc = serve(tmp_path, env, port)

            def all_ids() -> bool:
                return len({c.id for c in receiver.calls}) == EVENTS
            wait_for(all_ids, timeout=60, what="every event received after the restart")
        finally:
            dev.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        assert all(c.verified_with == [secret] for c in receiver.calls)
        ids = [c.id for c in receiver.calls]
        sent_again = [i for i in set(ids) if ids.count(i) > 1]
        assert len(sent_again) == 1 and ids.index(sent_again[0]) == before  # the one in flight, again
        first_seen = list(dict.fromkeys(ids))  # deduped on webhook-id, in arrival order
        seqs = [next(c.json()["data"]["stream"]["seq"] for c in receiver.calls if c.id == i) for i in first_seen]
        assert seqs == list(range(EVENTS))
