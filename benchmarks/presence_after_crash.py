"""How long the API shows a device online after it died while the broker was down (issue 9 §4).

A private Mosquitto is killed with SIGKILL (so it never sends the device's will), the device's
connection is dropped while it is down, the broker comes back: the script prints how many
seconds after that the API says the device is offline, twice: with the fleet running throughout,
and with the fleet started again after the broker came back. The device declares `period_s`.

    .venv/bin/python benchmarks/presence_after_crash.py [--period-s 1] [--watch-s 60]

To measure another version, put its tree first: `PYTHONPATH=/tmp/old .venv/bin/python
benchmarks/presence_after_crash.py` (the script prints where `fleet` came from).
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.support; a PYTHONPATH tree comes first

import httpx

import fleet
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto


async def _online(http: httpx.AsyncClient, device_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = (await http.get(f"/api/devices/{device_id}")).json()
        if body.get("online") is True and body.get("last_health") is not None:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{device_id} never came online")


async def _until_offline(http: httpx.AsyncClient, device_id: str, since: float,
                         watch_s: float) -> tuple[float | None, dict[str, Any]]:
    while time.monotonic() - since < watch_s:
        body = (await http.get(f"/api/devices/{device_id}")).json()
        if body.get("online") is False or body.get("state") == "offline":
            return time.monotonic() - since, body
        await asyncio.sleep(0.1)
    return None, (await http.get(f"/api/devices/{device_id}")).json()


def _report(label: str, took: float | None, body: dict[str, Any], watch_s: float) -> None:
    shown = {k: body.get(k) for k in ("online", "state", "state_reason", "last_death_reason")}
    if took is None:
        print(f"{label}: still online {watch_s:.0f} s after the broker came back: {shown}")
    else:
        print(f"{label}: offline {took:.1f} s after the broker came back: {shown}")


def _born(port: int, device_id: str, period_s: int) -> ScriptedDevice:
    device = ScriptedDevice(port, device_id, ses=1)
    device.birth(period_s=period_s)
    device.health()
    return device


async def main(period_s: int, watch_s: float) -> None:
    print("fleet from", Path(fleet.__file__).parent)
    work = Path(tempfile.mkdtemp(prefix="presence-after-crash-"))
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    try:
        settings = fleet_settings(f"sqlite://{work / 'fleet.sqlite3'}", broker.url, mqtt_probe_s=0.5,
                                  presence_sweep_s=0.2)
        async with running_fleet(settings) as http:
            device = _born(broker.port, "crash-fleet-up", period_s)
            await _online(http, "crash-fleet-up")
            broker.kill()  # SIGKILL: no will
            device.kill()
            broker.start()
            took, body = await _until_offline(http, "crash-fleet-up", time.monotonic(), watch_s)
            _report(f"died during a broker crash, period_s={period_s}", took, body, watch_s)
            device = _born(broker.port, "crash-fleet-restarted", period_s)
            await _online(http, "crash-fleet-restarted")
        broker.kill()
        device.kill()
        broker.start()
        since = time.monotonic()
        async with running_fleet(settings) as http:
            took, body = await _until_offline(http, "crash-fleet-restarted", since, watch_s)
            _report(f"died during a broker crash, fleet restarted, period_s={period_s}", took, body, watch_s)
    finally:
        broker.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--period-s", type=int, default=1, help="the health period the device declares")
    parser.add_argument("--watch-s", type=float, default=60.0, help="give up after this long")
    args = parser.parse_args()
    asyncio.run(main(args.period_s, args.watch_s))
