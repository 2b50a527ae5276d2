"""Attacks on the ingest (issue 8, findings 6 and 7), performed against a real Mosquitto and database.

Each test sends what the attacker sent and then checks that the fleet is still storing: a good
message after the bad ones is the proof, and /healthz has to say what it really sees.
"""

import json
from typing import Any

import httpx
from tortoise import Tortoise

from fleet.runtime import Runtime
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


def _strict(text: str) -> Any:
    """A JSON reader that refuses what strict JSON refuses (NaN, Infinity, lone surrogates)."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in the fleet's answer")

    value = json.loads(text, parse_constant=refuse)
    text.encode("utf-8")  # a lone surrogate cannot be encoded
    return value


def _runtime(http: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def _stats(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get("/api/ingest/stats")).json()


async def _health_seqs(http: httpx.AsyncClient, device_id: str) -> list[int]:
    response = await http.get(f"/api/devices/{device_id}/health")
    return sorted(h["seq"] for h in response.json()) if response.status_code == 200 else []


async def _stored(http: httpx.AsyncClient, device_id: str, seq: int, what: str) -> None:
    async def there() -> bool:
        return seq in await _health_seqs(http, device_id)

    await async_wait_for(there, timeout=30, what=what)


def _nested(depth: int) -> bytes:
    """A health message whose `roles` figure is `depth` levels deep in all."""
    head = b'{"v":1,"ses":1,"seq":0,"ts":null,"up_s":1,"fw":"0.1.0","roles":'
    inner = depth - 1
    return head + b"[" * inner + b"]" * inner + b"}"


async def test_a_deeply_nested_message_is_refused_and_the_ingest_lives_on(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """Finding 6: a 2 KB payload nested 1,000 deep killed the ingest task for good (RecursionError)."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1, will=False)
    attacks = [_nested(1000), _nested(4000), b'{"a":' * 1300 + b"1" + b"}" * 1300]
    assert len(_nested(1000)) < 2200 and all(len(a) <= 8192 for a in attacks)
    for _ in range(3):  # the finding: 3 times out of 3
        for payload in attacks:
            dev.raw("health", payload)
    dev.health(seq=0)  # the good message after the attack
    await _stored(fleet, device_id, 0, "the good message after the nested ones")
    stats = await _stats(fleet)
    assert stats["rejected"] == {"invalid": 9}
    assert all("nested deeper than 16" in r["detail"] for r in stats["recent_rejects"])
    assert stats["batch_errors"] == 0
    health = await fleet.get("/healthz")
    assert health.status_code == 200 and health.json()["ingest_restarts"] == 0
    dev.close()


async def test_values_the_contract_forbids_are_refused_and_everything_the_fleet_says_is_strict_json(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """Finding 7: NaN, Infinity and 1e999 were stored as null, a lone surrogate broke a batch."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1, will=False)
    head = '"v":1,"ses":1,"ts":null'
    attacks = {
        "telemetry": [f'{{{head},"seq":{n},"role":"sim","r":{{"pm25":{bad}}}}}'
                      for n, bad in enumerate(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])],
        "health": [f'{{{head},"seq":{n},"up_s":1,"fw":"0.1.0","cpu_pct":{bad}}}'
                   for n, bad in enumerate(["NaN", "Infinity", "1e999"], start=10)]
                  + [f'{{{head},"seq":20,"up_s":1,"fw":"0.1.0","roles":{{"sim":{{"x":NaN}}}}}}'],
        "event": [f'{{{head},"seq":30,"id":"e1","type":"motion","phase":"once","category":"other",'
                  f'"data":{{"note":"{bad}"}}}}' for bad in ("\\ud800", "\\udfff", "a\\u0000b")]
                 + [f'{{{head},"seq":33,"id":"\\ud83d","type":"motion","phase":"once","category":"other",'
                    '"data":{}}'],
    }
    sent = 0
    for suffix, payloads in attacks.items():
        for payload in payloads:
            dev.raw(suffix, payload)
            sent += 1
    dev.raw("health", b'{"v":1,"ses":1,"seq":40,"ts":null,"up_s":1,"fw":"\xed\xa0\x80"}')  # surrogate as bytes
    dev.telemetry(seq=41, pm25=12.5)
    dev.send("event", seq=42, id="e2", type="motion", phase="once", category="other", data={"emoji": "\U0001f6a6"})
    dev.health(seq=43, cpu_pct=1.5)
    await _stored(fleet, device_id, 43, "the good messages after the bad ones")
    stats = await _stats(fleet)
    assert stats["rejected"] == {"invalid": sent, "bad_json": 1}
    assert stats["batch_errors"] == 0 and "store_error" not in stats["rejected"]
    # only the good ones are stored, and every answer about them is strict JSON
    for path in ("telemetry", "health", "events"):
        response = await fleet.get(f"/api/devices/{device_id}/{path}")
        assert response.status_code == 200
        rows = _strict(response.text)
        assert [r["seq"] for r in rows] == [{"telemetry": 41, "health": 43, "events": 42}[path]]
    assert _strict((await fleet.get(f"/api/devices/{device_id}")).text)["last_health"]["cpu_pct"] == 1.5
    _strict((await fleet.get("/api/ingest/stats")).text)
    dev.close()


async def test_the_fleet_never_publishes_json_a_strict_reader_refuses(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """Finding 7 (the other way): a command with NaN in its args was published as invalid JSON."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()

    async def known() -> bool:
        return (await fleet.get(f"/api/devices/{device_id}")).status_code == 200

    await async_wait_for(known, what="the device from its birth")
    for body in ('{"name":"ping","args":{"x":NaN}}', '{"name":"ping","args":{"x":Infinity}}',
                 '{"name":"ping","args":{"x":"\\ud800"}}'):
        response = await fleet.post(f"/api/devices/{device_id}/commands", content=body,
                                    headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 422), response.text  # refused, whichever layer sees it first
        assert "ud800" not in response.text  # the refusal does not repeat the input
    response = await fleet.put(f"/api/devices/{device_id}/desired", content='{"doc":{"level":NaN}}',
                               headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    good = await fleet.post(f"/api/devices/{device_id}/commands", json={"name": "ping", "args": {"x": 1.5}})
    assert good.status_code == 202

    def commands() -> list[dict[str, Any]]:
        return [body for topic, body in list(dev.received) if topic.endswith("/cmd")]

    async def arrived() -> bool:
        return bool(commands())

    await async_wait_for(arrived, what="the good command at the device")
    assert [c["args"] for c in commands()] == [{"x": 1.5}]  # nothing of the refused ones went out
    dev.close()


async def test_the_ingest_survives_a_database_failure_after_storing_a_batch(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """Finding 6 (any exception): a database error while answering a birth with the time escaped the
    loop, and the ingest task died. Here the `command` table is made unusable for real."""
    conn = Tortoise.get_connection("default")
    await conn.execute_script("ALTER TABLE command RENAME TO command_away")
    try:
        board = ScriptedDevice(mosquitto.port, device_id, ses=3, will=False)
        board.birth(kind="esp32", roles=["light"])  # ts null: the fleet sends set_time, which fails
        board.health(seq=0)
        await _stored(fleet, device_id, 0, "a message after the failed set_time")
        second = ScriptedDevice(mosquitto.port, device_id + "b", ses=1, will=False)
        second.birth(kind="esp32", roles=["light"])
        second.health(seq=0)
        await _stored(fleet, device_id + "b", 0, "a second board after it")
    finally:
        await conn.execute_script("ALTER TABLE command_away RENAME TO command")
    health = await fleet.get("/healthz")
    assert health.status_code == 200 and health.json()["ingest_restarts"] == 0
    board.close()
    second.close()


async def test_a_dead_ingest_loop_makes_healthz_503_until_the_supervisor_restarts_it(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    supervisor = _runtime(fleet).supervisor
    supervisor.backoff_min_s = 3600.0  # hold it down while we look
    assert supervisor.task is not None
    supervisor.task.cancel()  # the loop ends, as it would on a crash

    async def down() -> httpx.Response | None:
        response = await fleet.get("/healthz")
        # the supervisor notices the death an instant after the task ends; wait for both
        return response if response.status_code == 503 and response.json()["ingest_restarts"] else None

    response = await async_wait_for(down, what="healthz to turn unhealthy")
    report = response.json()
    assert report["ok"] is False and report["ingest_running"] is False and report["ingest_restarts"] == 1
    assert any("ingest loop is down" in p for p in report["problems"])
    assert report["mqtt_connected"] is True  # the socket flag alone would have said "fine"


async def test_the_supervisor_restarts_a_dead_ingest_loop_and_storing_goes_on(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    supervisor = _runtime(fleet).supervisor
    supervisor.backoff_min_s = 0.1
    for restart in (1, 2):
        assert supervisor.task is not None
        supervisor.task.cancel()

        async def back(restart: int = restart) -> bool:
            return supervisor.restarts == restart and supervisor.running

        await async_wait_for(back, what=f"restart {restart}")
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1, will=False)
    dev.health(seq=0)
    await _stored(fleet, device_id, 0, "a message after two restarts")

    async def healthy() -> bool:
        return (await fleet.get("/healthz")).status_code == 200

    await async_wait_for(healthy, what="healthz back to 200")
    dev.close()
