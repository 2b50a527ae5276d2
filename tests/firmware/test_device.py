"""The firmware end to end: the real MicroPython under a 64 KB heap, talking to a real Mosquitto."""

import json
import time
from collections.abc import Callable
from pathlib import Path

from provisioning.hostboard import EXIT_CONFIG, EXIT_REBOOT
from tests.firmware.support import HostBoard, session_probe, upstream, wait_upstream
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

Boards = Callable[..., HostBoard]


def send_command(
    probe: Probe,
    device_id: str,
    cid: str,
    name: str,
    args: dict | None = None,
    *,
    expires_in_ms: int = 60_000,
) -> None:
    exp = time.time_ns() // 1_000_000 + expires_in_ms
    body = {"v": 1, "id": cid, "name": name, "args": args or {}, "exp": exp}
    probe.publish(f"ioc/v1/d/{device_id}/cmd", json.dumps(body))


def result_of(probe: Probe, cid: str, count: int = 1) -> list[dict]:
    return wait_upstream(probe, "cmd/result", lambda m: m["id"] == cid, count=count)


def test_birth_then_health_numbered_in_its_stream(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id).start()
    birth = wait_upstream(probe, "birth")[0]
    assert birth["kind"] == "esp32" and birth["fw"] == "0.1.0" and birth["roles"] == []
    assert birth["boot"] == {"n": 1, "reason": "power_on"}
    assert birth["period_s"] == 1
    ses = birth["ses"]
    assert 2**47 < ses <= 2**48 + 1  # a new board has no counter: it starts at a random 48-bit value
    assert birth.get("prev", {"ses": ses - 1})["ses"] == ses - 1  # the boot opened ses - 1, the connect ses
    health = wait_upstream(probe, "health", lambda m: m["ses"] == ses, count=3)
    assert [m["seq"] for m in health[:3]] == [0, 1, 2]
    first = health[0]
    assert first["reset"] == "power_on" and first["rssi"] == -60 and first["fw"] == "0.1.0"
    assert first["queue"] == 0 and first["dropped"] == 0 and first["reconnects"] == 0
    assert 0 < first["heap_free"] < 64 * 1024 and first["heap_min"] <= first["heap_free"]
    assert 0 < first["heap_max_block"] <= first["heap_free"]  # probed on the unix port
    assert isinstance(first["ts"], int)
    assert board.file("state.json") == {"boots": 1, "ses": ses}
    board.wait_console("boot marked good")
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}


def test_kill_9_leaves_a_retained_death_of_the_same_session(
    boards: Boards, device_id: str, probe: Probe, mosquitto: Mosquitto
) -> None:
    board = boards(device_id).start()
    ses = wait_upstream(probe, "birth")[0]["ses"]
    board.kill()
    death = wait_upstream(probe, "death")[0]
    assert death == {"v": 1, "ses": ses, "ts": None, "reason": "lost"}
    late = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/+")  # a fleet that starts afterwards
    try:
        wait_for(lambda: len(late.messages) == 2, what="retained birth and death")
        retained = {t.rsplit("/", 1)[1]: (json.loads(p)["ses"], r) for t, p, r in late.messages}
        assert retained == {"birth": (ses, True), "death": (ses, True)}
    finally:
        late.close()


def test_commands_are_answered_once_each(boards: Boards, device_id: str, probe: Probe) -> None:
    boards(device_id).start()
    wait_upstream(probe, "birth")
    send_command(probe, device_id, "c-1", "ping")
    assert result_of(probe, "c-1")[0]["detail"] == {"n": 1}
    send_command(probe, device_id, "c-1", "ping")  # redelivered: answered again, not run again
    send_command(probe, device_id, "c-2", "ping")
    first, again = result_of(probe, "c-1", count=2)
    assert (again["status"], again["detail"]) == (first["status"], first["detail"]) == ("ok", {"n": 1})
    assert again["seq"] > first["seq"]
    assert result_of(probe, "c-2")[0]["detail"] == {"n": 2}
    send_command(probe, device_id, "c-3", "self_destruct")
    send_command(probe, device_id, "c-4", "ping", expires_in_ms=-1000)
    send_command(probe, device_id, "c-5", "set_health_period", {"period_s": 0})
    send_command(probe, device_id, "c-6", "set_health_period", {"period_s": 2})
    outcome = {cid: result_of(probe, cid)[0] for cid in ("c-3", "c-4", "c-5", "c-6")}
    assert {cid: r["status"] for cid, r in outcome.items()} == {
        "c-3": "unknown",
        "c-4": "expired",
        "c-5": "error",
        "c-6": "ok",
    }
    assert outcome["c-6"]["detail"] == {"period_s": 2}
    # Every answer of the stream is numbered without gaps after the health reports around it.
    ses = outcome["c-6"]["ses"]
    seqs = sorted(
        m["seq"] for kind in ("health", "cmd/result") for m in upstream(probe, kind) if m["ses"] == ses
    )
    assert seqs == list(range(len(seqs)))


def test_desired_state_is_stored_and_runs_again_after_a_restart(
    boards: Boards, device_id: str, probe: Probe
) -> None:
    board = boards(device_id).start()
    wait_upstream(probe, "birth")
    topic = f"ioc/v1/d/{device_id}/state/desired"
    probe.publish(topic, json.dumps({"v": 1, "version": 3, "doc": {"health_period_s": 7}}), retain=True)
    reported = wait_upstream(probe, "state/reported")[0]
    assert (reported["version"], reported["status"]) == (3, "applied")
    assert board.file("desired.json") == {"version": 3, "doc": {"health_period_s": 7}}
    probe.publish(topic, json.dumps({"v": 1, "version": 4, "doc": {"health_period_s": -1}}), retain=True)
    rejected = wait_upstream(probe, "state/reported", lambda m: m["version"] == 4)[0]
    assert rejected["status"] == "rejected" and "health_period_s" in rejected["error"]
    assert board.file("desired.json")["version"] == 3
    probe.publish(topic, b"", retain=True)  # the broker forgets it: only the flash copy is left

    assert board.stop() == 0
    death = wait_upstream(probe, "death")[0]
    assert death["reason"] == "shutdown" and death["ses"] == reported["ses"]
    board.start()
    births = wait_upstream(probe, "birth", count=2)
    assert births[1]["period_s"] == 7  # applied from flash before it connected
    again = wait_upstream(probe, "state/reported", count=3)[2]
    assert (again["version"], again["status"]) == (3, "applied")
    assert again["ses"] == births[1]["ses"] - 1  # made at boot, in the boot's stream, before connecting


def test_reconnects_with_backoff_and_replays_what_it_made_offline(tmp_path: Path, device_id: str) -> None:
    mosquitto = Mosquitto(tmp_path / "broker")  # keeps sessions across its restart (persistence)
    mosquitto.start()
    board = HostBoard(tmp_path / device_id, device_id, mosquitto.port)
    watcher = session_probe(mosquitto.port, f"ioc/v1/d/{device_id}/#")
    try:
        board.start()
        first = wait_upstream(watcher, "birth")[0]
        wait_upstream(watcher, "health", lambda m: m["ses"] == first["ses"])
        mosquitto.stop()
        board.wait_console(r"link lost.*retry in \d+ ms")
        offline = board.wait_console(rf"health ses={first['ses']} seq=(\d+) link=down")[0]
        made_offline = int(offline.group(1))
        mosquitto.start()
        second = wait_upstream(watcher, "birth", lambda m: m["ses"] > first["ses"])[0]
        assert second["ses"] == first["ses"] + 1  # failed attempts do not use up stream numbers
        # Sent after the reconnect, with the stamp it got when it was made, offline.
        wait_upstream(watcher, "health", lambda m: (m["ses"], m["seq"]) == (first["ses"], made_offline))
        later = wait_upstream(watcher, "health", lambda m: m["ses"] == second["ses"])[0]
        assert later["reconnects"] == 1 and later["seq"] >= 0
        assert "retry in" in board.console()
    finally:
        watcher.close()
        board.kill()
        mosquitto.kill()


def test_offline_buffer_keeps_the_newest_and_counts_the_dropped(
    boards: Boards, device_id: str, mosquitto: Mosquitto
) -> None:
    mosquitto.stop()
    board = boards(device_id, buffer_max=2).start()
    boot_ses = int(board.wait_console(r"health ses=(\d+) seq=4 ")[0].group(1))  # five made, room for two
    watcher = None
    mosquitto.start()
    watcher = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#")
    try:
        birth = wait_upstream(watcher, "birth")[0]
        # The second report of the new stream is made after the backlog left: its count is final.
        now = wait_upstream(watcher, "health", lambda m: m["ses"] == birth["ses"], count=2)[1]
        made = {m["seq"] for m in upstream(watcher, "health") if m["ses"] == boot_ses}
        assert now["dropped"] >= 3
        # What survived is the newest of the boot stream: consecutive, ending at the last one made.
        assert len(made) <= 2 and made == set(range(max(made) - len(made) + 1, max(made) + 1))
        assert max(made) + 1 - len(made) == now["dropped"]
    finally:
        watcher.close()


def test_reboot_command_restarts_with_a_soft_reset(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id).start()
    ses = wait_upstream(probe, "birth")[0]["ses"]
    send_command(probe, device_id, "r-1", "reboot")
    assert result_of(probe, "r-1")[0]["status"] == "ok"
    assert board.wait_exit() == EXIT_REBOOT
    death = wait_upstream(probe, "death")[0]
    assert (death["ses"], death["reason"]) == (ses, "shutdown")
    board.start()
    birth = wait_upstream(probe, "birth", count=2)[1]
    assert birth["boot"] == {"n": 2, "reason": "soft"} and birth["ses"] > ses


def test_sim_role_is_announced_and_sends_telemetry(boards: Boards, device_id: str, probe: Probe) -> None:
    boards(device_id, roles=["sim"], telemetry_period_s=1).start()
    assert wait_upstream(probe, "birth")[0]["roles"] == ["sim"]
    reading = wait_upstream(probe, "telemetry")[0]
    assert reading["role"] == "sim" and set(reading["r"]) == {"temp_c", "count"}


def test_a_bad_config_is_one_clear_line(boards: Boards, device_id: str) -> None:
    board = boards(device_id, health_period_s="often")
    board.start()
    assert board.wait_exit() == EXIT_CONFIG
    lines = board.console().strip().splitlines()
    assert lines[-1] == ("fw: config error: config.json: health_period_s must be an integer in 1..86400")
    assert "Traceback" not in board.console()
