"""OTA end to end with real devices (issue 11, docs/ota.md): releases built and signed with the
signer's own CLI (`provision release build/sign`), published through POST /api/releases and rolled
out through POST /api/rollouts as an ops user, by the real fleet (uvicorn on a free port, its offers'
download URL from FLEET_PUBLIC_URL) to real devices that log in to Mosquitto with the credentials the
fleet issued them and download their files from the fleet's /ota/files route:

- an ESP32 board (the firmware on the MicroPython unix port, -X heapsize=64k, started again whenever
  it resets itself, as a board does: tests/firmware/ota_support.Keeper);
- a Pi agent installed in folders with the launcher, run by a stand-in for systemd
  (tests/edge/ota_support.PiRig), its two versions built by tests/edge/ota_support.build_kit.

Everything is observed through the fleet's API: the rollout's device states, the devices' births,
the releases' download counters, the auto-pause's reason.
"""

import asyncio
import contextlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.ota.states import ORDER, DeviceState
from provisioning.release import BuildRequest, build_release
from tests.edge.ota_support import BASE, PATCH, Kit, PiRig, build_kit
from tests.firmware.ota_support import Keeper, firmware_tree
from tests.firmware.support import HostBoard
from tests.fleet.rollout_kit import TICK_S, device_rows, engine, rollout
from tests.provisioning.conftest import run_provision
from tests.support.fleet import enroll, fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

HEAP = "64k"
ESP_OLD, ESP_NEW = "0.1.0", "0.2.0"  # the board's firmware (firmware/app_a/version.py), the release's
TAR = {"Content-Type": "application/x-tar"}


def _provision(*args: str) -> str:
    done = run_provision(*args)
    assert done.code == 0, done.err
    return done.out


@dataclass(frozen=True)
class Signer:
    key: Path  # the private key, for `provision release sign`
    public: Path
    trust: Path  # ota_keys.json, as `provision flash --ota-keys` writes it to a board


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    folder = tmp_path_factory.mktemp("release-key")
    key, trust = folder / "release.pem", folder / "ota_keys.json"
    _provision("release", "keygen", "--out", str(key))
    public = folder / "release.pub.pem"
    _provision("release", "trust", str(public), "--out", str(trust))
    return Signer(key, public, trust)


@pytest.fixture(scope="module")
def esp_releases(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> dict[str, Path]:
    """Signed release folders: `good` (the bundled firmware at ESP_NEW) and `crash` (the same
    version of a firmware whose app raises at start). The CLI builds the bundled firmware only, so
    the crashing one is built by the function behind it from a changed tree; both signed by the CLI."""
    tmp = tmp_path_factory.mktemp("esp-releases")
    good, crash = tmp / "good", tmp / "crash"
    _provision("release", "build", "--kind", "esp32", "--version", ESP_NEW, "--min-version", ESP_OLD,
               "--floor", ESP_OLD, "--expires-days", "30", "--out", str(good))
    build_release(BuildRequest(kind="esp32", version=ESP_NEW, out=crash, min_version=ESP_OLD, floor=ESP_OLD,
                               firmware=firmware_tree(tmp / "fw-crash", crash=True)))
    for folder in (good, crash):
        _provision("release", "sign", str(folder), "--key", str(signer.key))
    return {"good": good, "crash": crash}


@pytest.fixture(scope="module")
def pi_kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """The agent at BASE (installed) and PATCH, signed releases (tests/edge/ota_support.py)."""
    return build_kit(tmp_path_factory.mktemp("pi-kit"), versions=(BASE, PATCH))


def release_tar(folder: Path) -> bytes:
    """The upload: the signed release folder (release.json, files/) as a tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


@dataclass
class Site:
    """The fleet (as admin), an ops user's token, the broker that enforces per-device accounts."""

    http: httpx.AsyncClient
    broker: Mosquitto
    ops: dict[str, str]
    keys: Path  # FLEET_OTA_KEYS
    tmp: Path

    async def enroll(self, device_id: str, kind: str) -> dict[str, str]:
        return await enroll(self.http, device_id, kind, "tan-phu")

    async def publish(self, folder: Path) -> dict[str, Any]:
        response = await self.http.post("/api/releases", content=release_tar(folder), headers={**TAR, **self.ops})
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def start_rollout(self, release: str, device_id: str, **plan: Any) -> int:
        body = {"release": release, "target": {"devices": [device_id]}, "phases": [100], "soak_s": 5, **plan}
        made = await self.http.post("/api/rollouts", json=body, headers=self.ops)
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    async def device(self, device_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/devices/{device_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def healthy(self, device_id: str, fw: str) -> dict[str, Any]:
        """The device online on `fw` with a health report of that session."""
        async def ready() -> dict[str, Any] | None:
            got = await self.device(device_id)
            health = got.get("last_health") or {}
            return got if got["state"] == "online" and got["fw"] == fw and health.get("fw") == fw else None

        found = await async_wait_for(ready, timeout=60, what=f"{device_id} online on {fw}")
        assert found is not None
        return found


@pytest.fixture
async def site(tmp_path: Path, signer: Signer) -> AsyncIterator[Site]:
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    broker.start()
    keys = tmp_path / "release-keys.pem"
    keys.write_text(signer.public.read_text())
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url, broker_accounts="dynsec",
                              ota_dir=tmp_path / "ota", ota_keys=keys)
    # what devices are told to download from: the fleet's own HTTP port, as they reach it
    settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{settings.http_port}"})
    try:
        async with running_fleet(settings) as http:
            engine(http).tick_s = TICK_S
            ops = {"Authorization": f"Bearer {await token_for(http, Role.OPS)}"}
            yield Site(http, broker, ops, keys, tmp_path)
    finally:
        broker.kill()


@dataclass
class StateLog:
    """Every state of one device in one rollout the fleet's API showed, in order (polled)."""

    http: httpx.AsyncClient
    rollout_id: int
    device_id: str
    seen: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            row = (await device_rows(self.http, self.rollout_id)).get(self.device_id)
            if row is not None and (not self.seen or self.seen[-1] != row["state"]):
                self.seen.append(row["state"])
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def watching(http: httpx.AsyncClient, rollout_id: int, device_id: str) -> AsyncIterator[StateLog]:
    log = StateLog(http, rollout_id, device_id)
    task = asyncio.create_task(log.run(), name=f"state-log-{device_id}")
    try:
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def assert_forward(seen: list[str], last: str) -> None:
    """The states went forward along docs/ota.md's list, from the offer, and ended at `last`."""
    assert seen and seen[-1] == last, seen
    order = [ORDER[DeviceState(s)] for s in seen]
    assert order == sorted(order), seen
    assert ORDER[DeviceState(seen[0])] <= ORDER[DeviceState.OFFERED], seen  # seen from before a report


async def finished(http: httpx.AsyncClient, rollout_id: int, timeout: float = 120) -> dict[str, Any]:
    """The rollout once it is done or paused (a pause fails a test that expects done at once)."""
    async def ended() -> dict[str, Any] | None:
        got = await rollout(http, rollout_id)
        return got if got["status"] in ("done", "paused", "aborted") else None

    found = await async_wait_for(ended, timeout=timeout, interval=0.1, what=f"rollout {rollout_id} done or paused")
    assert found is not None
    return found


@contextlib.contextmanager
def esp_board(site: Site, device_id: str, credentials: dict[str, str], signer: Signer) -> Iterator[HostBoard]:
    board = HostBoard(site.tmp / device_id, device_id, site.broker.port, roles=["sim"],
                      username=credentials["username"], password=credentials["password"],
                      ota_keys=signer.trust.read_bytes(), ota_trial_s=30)
    keeper = Keeper(board, HEAP)
    try:
        yield board
    finally:
        keeper.stop()
        board.kill()


async def test_a_rollout_takes_a_real_esp32_board_and_a_real_pi_agent_to_their_new_versions(
        site: Site, signer: Signer, esp_releases: dict[str, Path], pi_kit: Kit) -> None:
    esp_id, pi_id = f"esp-ota-{uuid.uuid4().hex[:6]}", f"pi-ota-{uuid.uuid4().hex[:6]}"
    esp_login = await site.enroll(esp_id, "esp32")
    pi_login = await site.enroll(pi_id, "pi")

    # the Pi's releases are signed by another key: added to FLEET_OTA_KEYS, no restart
    site.keys.write_text(site.keys.read_text() + (pi_kit.workdir / "release.pub.pem").read_text())
    esp_release = await site.publish(esp_releases["good"])
    assert esp_release["name"] == f"esp32-{ESP_NEW}"
    pi_base = await site.publish(pi_kit.workdir / f"release-{BASE}")
    pi_patch = await site.publish(pi_kit.workdir / f"release-{PATCH}")

    async def deltas_made() -> dict[str, Any] | None:
        got = (await site.http.get(f"/api/releases/{pi_patch['name']}")).json()
        return got if got["deltas_state"] != "pending" else None

    made = await async_wait_for(deltas_made, timeout=60, what="the Pi release's deltas")
    assert made is not None
    pi_patch = made
    assert pi_patch["deltas_state"] == "done" and pi_patch["deltas"], pi_patch
    delta = pi_patch["deltas"][0]
    assert delta["base_sha256"] == pi_base["files"][0]["sha256"]

    pi = await asyncio.to_thread(PiRig, site.tmp / "pi", pi_kit, site.broker.port, device_id=pi_id, probe=False)
    config = pi.config.read_text()
    pi.config.write_text(config.replace(
        "[broker]\n", f'[broker]\nusername = "{pi_login["username"]}"\npassword = "{pi_login["password"]}"\n', 1))
    pi.start()
    try:
        with esp_board(site, esp_id, esp_login, signer) as board:
            esp_before = await site.healthy(esp_id, ESP_OLD)
            pi_before = await site.healthy(pi_id, BASE)

            # one after the other: the gate compares each device's health after its update with its
            # own before, and a board soaking while pip builds the Pi's venv would be judged on the
            # load of the machine (its slowest loop turn goes from 0 to a few ms)
            esp_rollout = await site.start_rollout(esp_release["name"], esp_id)
            async with watching(site.http, esp_rollout, esp_id) as esp_states:
                esp_done = await finished(site.http, esp_rollout)
            esp_row = (await device_rows(site.http, esp_rollout))[esp_id]
            assert esp_done["status"] == "done", (esp_done["pause_reason"], esp_row)
            assert_forward(esp_states.seen, "confirmed")
            assert esp_done["counts"]["confirmed"] == 1
            assert esp_row["pct"] is not None and esp_row["reason"] is None, esp_row  # it reported downloading
            assert {"loop_ms", "heap_free"} <= set(esp_row["after"] or {}), esp_row  # the gate read its health
            esp_after = await site.healthy(esp_id, ESP_NEW)  # the new slot's birth
            assert esp_after["session"] != esp_before["session"]
            assert board.file("bootstate.json")["active"] == "b"

            pi_rollout = await site.start_rollout(pi_patch["name"], pi_id)
            async with watching(site.http, pi_rollout, pi_id) as pi_states:
                pi_done = await finished(site.http, pi_rollout)
            pi_row = (await device_rows(site.http, pi_rollout))[pi_id]
            assert pi_done["status"] == "done", (pi_done["pause_reason"], pi_row)
            assert_forward(pi_states.seen, "confirmed")
            assert pi_done["counts"]["confirmed"] == 1 and pi_row["reason"] is None, pi_row
            assert pi_row["after"], pi_row
            pi_after = await site.healthy(pi_id, PATCH)  # the new version's birth
            assert pi_after["session"] != pi_before["session"]
            assert pi.running() == PATCH
            print(f"\nstates seen through the API: esp32 {esp_states.seen}; pi {pi_states.seen}")

            # ops roll the phase back: a `rollback` offer to each, back to the version kept beside
            for rollout_id in (esp_rollout, pi_rollout):
                asked = await site.http.post(f"/api/rollouts/{rollout_id}/rollback", json={}, headers=site.ops)
                assert asked.status_code == 200 and asked.json()["rollback_offers"] == 1, asked.text
            for rollout_id, device_id in ((esp_rollout, esp_id), (pi_rollout, pi_id)):
                async def rolled_back(rid: int = rollout_id, did: str = device_id) -> dict[str, Any] | None:
                    row = (await device_rows(site.http, rid))[did]
                    return row if row["state"] == "rolled_back" else None

                row = await async_wait_for(rolled_back, timeout=60, what=f"{device_id} rolled back by command")
                assert row is not None and row["action"] == "rollback", row
                assert (row["reason"] or "").startswith("command"), row
            await site.healthy(esp_id, ESP_OLD)
            await site.healthy(pi_id, BASE)
            assert board.file("bootstate.json")["active"] == "a" and pi.running() == BASE

        # the fleet served the files: every file of the board's slot; the Pi's delta, not the full file
        served = (await site.http.get(f"/api/releases/{esp_release['name']}")).json()
        assert served["downloads"] >= len(esp_release["files"]), served
        assert served["bytes_served"] >= esp_release["total_size"], served
        served = (await site.http.get(f"/api/releases/{pi_patch['name']}")).json()
        assert served["downloads"] >= 1 and served["bytes_served"] == delta["size"], served
    finally:
        await asyncio.to_thread(pi.close)


async def test_a_crash_looping_esp32_release_goes_back_to_the_old_slot_and_pauses_its_rollout(
        site: Site, signer: Signer, esp_releases: dict[str, Path]) -> None:
    esp_id = f"esp-bad-{uuid.uuid4().hex[:6]}"
    login = await site.enroll(esp_id, "esp32")
    bad = await site.publish(esp_releases["crash"])
    with esp_board(site, esp_id, login, signer) as board:
        before = await site.healthy(esp_id, ESP_OLD)
        rollout_id = await site.start_rollout(bad["name"], esp_id)
        async with watching(site.http, rollout_id, esp_id) as states:
            paused = await finished(site.http, rollout_id)
        assert paused["status"] == "paused", paused
        assert_forward(states.seen, "rolled_back")
        assert "boot: leaving slot b" in board.console()  # it switched, then came back
        row = (await device_rows(site.http, rollout_id))[esp_id]
        assert row["state"] == "rolled_back" and (row["reason"] or "").startswith("crash"), row

        reason = paused["pause_reason"]
        assert reason["figure"] == "failure_rate" and reason["by"] == "rollout-engine", reason
        assert reason["devices"] == [esp_id] and reason["failed"] == 1 and reason["offered"] == 1, reason
        assert reason["reasons"][esp_id].startswith("rolled_back: crash"), reason
        assert (await rollout(site.http, rollout_id))["status"] == "paused"

        back = await site.healthy(esp_id, ESP_OLD)  # the old slot runs, a new session
        assert back["session"] != before["session"]

        async def judged_good() -> dict[str, Any] | None:
            state: dict[str, Any] = board.file("bootstate.json")
            return state if "trial" not in state else None  # written when the old slot's boot is judged good

        state = await async_wait_for(judged_good, timeout=30, what="the old slot's boot judged good")
        assert state is not None
        assert state["active"] == "a", state
