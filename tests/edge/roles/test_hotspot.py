"""The hotspot role: hostapd's control-socket protocol (a real datagram peer) and recorded log
lines, against a private Mosquitto. No MAC address may leave the counter."""

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from contract import make_command
from edge.agent import Agent
from edge.roles import ROLES, RoleContext, RoleSpec
from edge.roles.hotspot import HotspotRole, HotspotSettings
from edge.roles.hotspot_counter import HotspotCounter, is_randomised, normalise_mac, pseudonym
from edge.roles.hotspot_sources import StationParser
from tests.edge.helpers import ConfigFactory, results_for, until
from tests.edge.roles.helpers import checked_upstream, role_telemetry
from tests.edge.roles.hostapd_peer import HostapdPeer
from tests.support.mqtt_probe import Probe

RECORDED = Path(__file__).parent / "data" / "hostapd-events.log"
MACS = ["3c:22:fb:10:20:30", "9a:41:07:5e:c2:11", "b8:27:eb:aa:bb:cc", "1e:77:00:ab:cd:ef"]
T0 = 1_767_243_600_000  # 2026-01-01 05:00 UTC = 12:00 in Vietnam (UTC+7)
HOUR = 3_600_000
FAR = 4_102_444_800_000  # a command expiry in 2100


class ManualClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def no_mac_in(text: str) -> None:
    flat = re.sub(r"[^0-9a-f]", "", text.lower())
    for mac in MACS:
        assert mac.replace(":", "") not in flat, "a MAC address leaked"


def roles_with(clock: ManualClock) -> dict[str, RoleSpec[Any]]:
    def make(settings: HotspotSettings, context: RoleContext) -> HotspotRole:
        return HotspotRole(settings, context, clock=clock)

    return {**ROLES, "hotspot": RoleSpec(HotspotSettings, make)}


def reports(probe: Probe, period_s: int) -> list[dict[str, Any]]:
    return [t["r"] for t in role_telemetry(probe, "hotspot") if t["r"]["period_s"] == period_s]


def test_macs_randomised_bit_and_per_day_pseudonyms() -> None:
    assert normalise_mac("1E-77-00-AB-CD-EF") == "1e:77:00:ab:cd:ef" == normalise_mac("1e7700abcdef")
    assert normalise_mac("not-a-mac") is None and normalise_mac("1e:77:00-ab:cd:ef") is None
    assert [is_randomised(m) for m in MACS] == [False, True, False, True]
    counter = HotspotCounter(T0, tz_min=420)
    counter.connected(MACS[0], T0)
    first = counter.day.users.copy()
    counter.roll(T0 + 12 * HOUR)  # past midnight in Vietnam: a new key
    counter.connected(MACS[0], T0 + 12 * HOUR + 1)
    assert counter.day.users and counter.day.users != first, "pseudonyms of two days cannot be linked"
    assert pseudonym(b"k" * 32, MACS[0]) != pseudonym(b"j" * 32, MACS[0])


def test_the_users_bound_keeps_counting_accesses() -> None:
    counter = HotspotCounter(T0, max_users=2)
    for i in range(4):
        counter.connected(f"00:00:00:00:00:0{i}", T0)
    (_hour, day) = counter.roll(T0 + 24 * HOUR)
    assert (day.accesses, day.users, day.users_capped) == (4, 2, True)


def test_recorded_lines_parse() -> None:
    parser = StationParser()
    changes = [parser.parse(line) for line in RECORDED.read_text().splitlines()]
    assert [c for c in changes if c] == [
        ("connected", MACS[0]),
        ("connected", MACS[1]),
        ("disconnected", MACS[0]),
        ("connected", MACS[0]),
        ("connected", MACS[0]),
        ("connected", MACS[2]),
        ("disconnected", MACS[1]),
        ("connected", MACS[1]),
        ("connected", MACS[3]),
    ]


async def test_recorded_log_lines_are_counted_per_hour_and_day_without_macs(
    edge_config: ConfigFactory, probe: Probe, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "hostapd.log"
    log.write_text(RECORDED.read_text())
    state = tmp_path / "hotspot-day.json"
    clock = ManualClock(T0)
    settings = {"source": "log", "log_path": str(log), "log_from_start": True, "state_path": str(state)}
    async with Agent(edge_config(roles={"hotspot": settings}), roles=roles_with(clock)) as agent:
        role = agent.roles["hotspot"]
        assert isinstance(role, HotspotRole)
        await until(lambda: role.events == 9, "the recorded events")
        with log.open("a") as f:  # the file grows: followed
            f.write("Mar  3 08:40:00 hotspot-cho hostapd: wlan0: AP-STA-CONNECTED 3C:22:FB:10:20:30\n")
        await until(lambda: role.events == 10, "a line appended later")
        clock.now_ms = T0 + HOUR
        (hour,) = await until(lambda: reports(probe, 3600), "the hour's counts")
        key_before = json.loads(state.read_text())["key"]
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        clock.now_ms = T0 + 12 * HOUR  # past midnight, local time
        day = await until(lambda: reports(probe, 86400), "the day's counts")
        health = await until(
            lambda: [h for h in probe.payloads("health") if h.get("roles", {}).get("hotspot", {}).get("unparsed")],
            "health",
        )
        assert json.loads(state.read_text())["key"] != key_before, "the day's key is replaced at day end"
    assert hour["start_s"] == T0 // 1000
    expected = {"accesses": 3, "users": 2, "random_accesses": 3, "random_users": 2, "connected": 4}
    assert {k: hour[k] for k in expected} == expected
    assert {k: day[0][k] for k in expected} == expected
    assert day[0]["start_s"] == (T0 - 12 * HOUR) // 1000  # local midnight: 17:00 UTC the day before
    # each report is filed at its period's start, not at when it was sent (docs/protocol.md, telemetry)
    sent = role_telemetry(probe, "hotspot")
    assert {T0 - 12 * HOUR, T0} <= {t["at_ms"] for t in sent}
    assert all(t["at_ms"] == t["r"]["start_s"] * 1000 for t in sent)
    assert health[-1]["roles"]["hotspot"]["unparsed"] == 5
    checked_upstream(probe)
    for _, payload, _ in probe.messages:
        no_mac_in(payload.decode())
    no_mac_in(state.read_text())
    no_mac_in(caplog.text)


async def test_hostapd_control_socket_attach_events_restart_and_a_restart_within_the_day(
    edge_config: ConfigFactory, probe: Probe, tmp_path: Path, device_id: str
) -> None:
    peer = HostapdPeer(str(tmp_path / "wlan0"))
    clock = ManualClock(T0)
    settings = {
        "ctrl_path": peer.path,
        "local_dir": str(tmp_path),
        "ping_s": 0.1,
        "timeout_s": 0.5,
        "retry_max_s": 0.2,
        "state_path": str(tmp_path / "hotspot-day.json"),
    }
    config = edge_config(roles={"hotspot": settings})
    try:
        async with Agent(config, roles=roles_with(clock)) as agent:
            role = agent.roles["hotspot"]
            assert isinstance(role, HotspotRole)
            await until(lambda: peer.attached, "the role to ATTACH")
            peer.event(f"AP-STA-CONNECTED {MACS[0]}")
            peer.event(f"AP-STA-CONNECTED {MACS[1]}")
            peer.event(f"AP-STA-DISCONNECTED {MACS[0]}")
            await until(lambda: role.events == 3, "the events")
            await until(lambda: "PING" in peer.commands, "a PING")

            peer.stop()  # hostapd restarts: it forgets its clients
            await until(lambda: role.source_errors >= 1, "the lost hostapd noticed")
            peer.start()
            await until(lambda: peer.attached, "the role to ATTACH again")
            peer.event(f"AP-STA-CONNECTED {MACS[0]}")
            await until(lambda: role.events == 4, "events after the restart")

        async with Agent(config, roles=roles_with(clock)) as agent:  # the agent restarts in the day
            role = agent.roles["hotspot"]
            assert isinstance(role, HotspotRole)
            await until(lambda: peer.attached, "the new agent to ATTACH")
            peer.event(f"AP-STA-DISCONNECTED {MACS[0]}")
            peer.event(f"AP-STA-CONNECTED {MACS[0]}")  # a new session of a known user
            await until(lambda: role.events == 2, "events")
            probe.publish(*make_command(device_id, "c-counts", "hotspot.counts", {}, FAR))
            (result,) = await until(lambda: results_for(probe, "c-counts"), "the counts")
            clock.now_ms = T0 + HOUR
            (hour,) = await until(lambda: reports(probe, 3600), "the hour's counts")
    finally:
        peer.stop()
    assert result["detail"]["day"] == {
        "start_s": result["detail"]["day"]["start_s"],
        "accesses": 3,
        "users": 1,
        "random_accesses": 1,
        "random_users": 1,
    }
    assert (hour["accesses"], hour["users"], hour["random_users"]) == (3, 1, 1)
    checked_upstream(probe)
    for _, payload, _ in probe.messages:
        no_mac_in(payload.decode())
