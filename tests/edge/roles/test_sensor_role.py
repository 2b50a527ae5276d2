"""The sensor role over a real serial link (socat's linked pseudo-terminals) with an SDS011
stand-in writing real frames, against a private Mosquitto."""

import asyncio
import os
import pty
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial

from edge.agent import Agent
from edge.filters import max_error
from edge.roles.sensor import SensorRole
from edge.serialio.sds011 import frame
from tests.edge.helpers import ConfigFactory, until
from tests.edge.roles.conftest import PtyPair, seattle_temps
from tests.edge.roles.helpers import checked_upstream, events_of, role_telemetry
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

# Five warm days of Seattle's July 2010: peaks of about 75 °F, nights near 57 (read as µg/m³).
SERIES = [v for _, v in seattle_temps()[4960:5080]]
SPIKE = 900.0


class Sds011StandIn:
    """A sensor on the other end of the line: real frames from SERIES, a spike every 40 frames,
    garbage every 25. It sends at a sensor's pace (a frame every few ms), not in step with the test."""

    def __init__(self, path: str, period_s: float = 0.004) -> None:
        self.port = serial.Serial(path, 9600)
        self.period_s = period_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sds011-stand-in", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.period_s):
            value = SERIES[i % len(SERIES)]
            if i % 40 == 39:
                value = SPIKE
            data = frame(value, value * 1.5)
            if i % 25 == 24:
                data = b"\x00\xaa\x17" + data[:6] + data  # garbage and a frame cut short
            self.port.write(data)
            self.sent += 1
            i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.port.close()


@pytest.fixture
def stand_in(pty_pair: PtyPair) -> Iterator[Sds011StandIn]:
    sensor = Sds011StandIn(pty_pair.sensor)
    yield sensor
    sensor.stop()


def sensor_settings(port: str, **extra: Any) -> dict[str, Any]:
    return {
        "port": port,
        "median": 3,
        "max_error": {"pm25": 0.5, "pm10": 1.0},
        "max_interval_s": 5,
        "aggregate_s": 1,
        "alarms": {"pm25": {"high": 72, "hysteresis": 6}},
        **extra,
    }


async def test_sds011_over_a_serial_link_is_filtered_aggregated_and_alarmed(
    edge_config: ConfigFactory, probe: Probe, pty_pair: PtyPair, stand_in: Sds011StandIn
) -> None:
    config = edge_config(roles={"sensor": sensor_settings(pty_pair.device)})
    async with Agent(config) as agent:
        role = agent.roles["sensor"]
        assert isinstance(role, SensorRole)
        points = await until(
            lambda: [t for t in role_telemetry(probe, "sensor") if "pm25" in t["r"]][20:], "compressed points"
        )
        aggregates = await until(
            lambda: [t["r"] for t in role_telemetry(probe, "sensor") if "window_s" in t["r"]], "minute aggregates"
        )
        alarm = await until(
            lambda: [e for e in events_of(probe, "alarm") if e["phase"] == "end"], "an alarm raised and cleared"
        )
        health = await until(
            lambda: [
                h["roles"]["sensor"]
                for h in probe.payloads("health")
                if h.get("roles", {}).get("sensor", {}).get("bad")
            ],
            "health with the sensor's figures",
        )
    assert role.samples < stand_in.sent + 1
    values = [t["r"]["pm25"] for t in points]
    # every point and window carries its own time beside its readings, never as a reading
    sensor = role_telemetry(probe, "sensor")
    assert all(isinstance(t["at_ms"], int) and "at_ms" not in t["r"] for t in sensor)
    assert len({t["at_ms"] for t in points}) == len(points)
    assert max(values) < 100, "the spikes are rejected by the median"
    assert all(a["pm25_max"] < 100 and a["pm25_min"] <= a["pm25_mean"] <= a["pm25_max"] for a in aggregates)
    start = [e for e in events_of(probe, "alarm") if e["id"] == alarm[0]["id"]]
    assert [e["phase"] for e in start] == ["start", "end"]
    assert start[0]["data"]["value"] >= 72 and start[1]["data"]["value"] <= 66
    assert health[-1]["frames"] > 0 and health[-1]["read_errors"] == 0
    assert checked_upstream(probe) > 0, "every message passes the fleet's contract check"


async def test_the_role_reconstructs_within_its_error_and_survives_a_dead_line(
    edge_config: ConfigFactory, probe: Probe
) -> None:
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    config = edge_config(
        roles={"sensor": sensor_settings(path, median=1, max_error={"temp": 0.5}, aggregate_s=0, max_interval_s=86_400)}
    )
    async with Agent(config) as agent:
        role = agent.roles["sensor"]
        assert isinstance(role, SensorRole)
        await until(lambda: role.source.opened, "the role to open the port")
        os.write(master, frame(10, 15) * 3)
        await until(lambda: role.source.frames >= 3, "frames over the pty")
        os.close(master)  # the line goes dead: the role counts it and keeps trying
        await until(lambda: role.read_errors >= 2, "read errors counted")

        # The same filtering, fed a real series directly (times an hour apart).
        base = int(time.time() * 1000) + 60_000  # after the frames read from the line
        series = [(base + t, v) for t, v in seattle_temps()[:2000]]
        for t, v in series:
            role.process(t, {"temp": v})
        await role.commands()["flush"]({})
        await until(
            lambda: [t for t in role_telemetry(probe, "sensor") if t.get("at_ms") == series[-1][0]],
            "the flushed last point",
        )
        health = await until(
            lambda: [h for h in probe.payloads("health") if h.get("roles", {}).get("sensor", {}).get("read_errors")],
            "read errors in health",
        )
    # each point at its own time: the message's at_ms, beside its readings (docs/protocol.md, telemetry)
    points = [(t["at_ms"], t["r"]["temp"]) for t in role_telemetry(probe, "sensor") if "temp" in t["r"]]
    assert len(points) < len(series) / 4
    assert max_error(series, points) <= 0.5 + 1e-9
    assert health[-1]["roles"]["sensor"]["reopens"] >= 1


@pytest.fixture
def observer(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    probe = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#", persistent=True)
    yield probe
    probe.close()


async def test_readings_are_queued_while_the_broker_is_down_and_delivered_after(
    edge_config: ConfigFactory, mosquitto: Mosquitto, observer: Probe, pty_pair: PtyPair, stand_in: Sds011StandIn
) -> None:
    settings = sensor_settings(pty_pair.device, compression="deadband", max_error={"pm25": 0.0, "pm10": 0.0})
    settings.update(aggregate_s=0, max_interval_s=3600)
    async with Agent(edge_config(roles={"sensor": settings})) as agent:
        role = agent.roles["sensor"]
        assert isinstance(role, SensorRole)
        await until(lambda: role_telemetry(observer, "sensor")[5:], "readings flowing")
        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: not agent.link.connected.is_set(), "the agent to notice the outage")
        during = role.points_sent
        await until(lambda: role.points_sent >= during + 200, "readings made during the outage")
        assert agent.outbox.depth >= 100, "they wait in the queue"
        await asyncio.to_thread(mosquitto.start)
        await until(lambda: agent.link.connections >= 2, "the agent to reconnect", within=20)
        stand_in.stop()
        sent = role.telemetry_sent
        await until(
            lambda: len({(t["ses"], t["seq"]) for t in role_telemetry(observer, "sensor")}) >= sent,
            "every reading delivered after the outage",
            within=20,
        )
    assert agent.outbox.dropped == 0
    checked_upstream(observer)
