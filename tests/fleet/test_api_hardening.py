"""Bad requests get a short 4xx, never a 500 and never their own input back (issue 8, finding 15).

Each test sends what the attack sent, over real HTTP, to the real service on SQLite and PostgreSQL.
"""

import asyncio
import json
import socket
from typing import Any

import httpx

from fleet.models import Command, Device
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

JSON = {"Content-Type": "application/json"}
# what Python's json module accepts and strict JSON does not, as raw bytes on the wire
NOT_STRICT = {
    "NaN": b"NaN",
    "Infinity": b"-Infinity",
    "1e999": b"1e999",
    "lone surrogate": b'"\\ud800"',
    "NUL": b'"a\\u0000b"',
    "nested 1000 deep": b"[" * 1000 + b"]" * 1000,
}


def _body(template: str, value: bytes) -> bytes:
    return template.encode().replace(b"@", value)


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert len(response.content) < 500  # a short reason, not the body back
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body"] and set(detail[0]) == {"loc", "msg", "type"}


async def test_json_bodies_that_are_not_strict_json_get_422_everywhere(fleet: httpx.AsyncClient) -> None:
    """The unauthenticated endpoints too: login and enrollment answered 500 to a NaN."""
    assert (await fleet.post("/api/devices", json={"id": "strict-1", "kind": "pi"})).status_code == 201
    anonymous = httpx.AsyncClient(base_url=str(fleet.base_url))
    targets: list[tuple[httpx.AsyncClient, str, str, str]] = [
        (anonymous, "POST", "/api/auth/login", '{"username": "a", "password": @}'),
        (anonymous, "POST", "/api/enroll", '{"token": "abcdefgh12345678", "name": @}'),
        (fleet, "POST", "/api/devices", '{"id": "strict-2", "kind": "pi", "latitude": @}'),
        (fleet, "PATCH", "/api/devices/strict-1", '{"name": @}'),
        (fleet, "POST", "/api/devices/strict-1/commands", '{"name": "ping", "args": {"x": @}}'),
        (fleet, "PUT", "/api/devices/strict-1/desired", '{"doc": {"x": @}}'),
        (fleet, "POST", "/api/users", '{"username": "zed", "role": "viewer", "password": "p", "full_name": @}'),
    ]
    async with anonymous:
        for client, method, path, template in targets:
            for what, value in NOT_STRICT.items():
                body = _body(template, value)
                response = await client.request(method, path, content=body, headers=JSON)
                assert response.status_code != 500, (method, path, what)
                _assert_refused(response)
    assert await Device.filter(id="strict-2").count() == 0
    assert (await fleet.get("/api/devices/strict-1")).json()["name"] == ""


async def test_a_command_with_nan_in_args_is_refused_and_never_published(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """It used to be accepted (202) and published to the device as invalid JSON."""
    await fleet.post("/api/devices", json={"id": device_id, "kind": "pi"})
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    try:
        for value in (b"NaN", b"Infinity", b"1e999", b'"\\udfff"'):
            refused = await fleet.post(f"/api/devices/{device_id}/commands", headers=JSON,
                                       content=_body('{"name": "ping", "args": {"level": @}}', value))
            assert refused.status_code == 422, refused.text
        assert await Command.filter(device_id=device_id).count() == 0
        ok = await fleet.post(f"/api/devices/{device_id}/commands", json={"name": "ping", "args": {"level": 1.5}})
        assert ok.status_code == 202

        async def received() -> list[tuple[str, dict[str, Any]]] | None:
            return [m for m in dev.received if m[0].endswith("/cmd")] or None

        commands = await async_wait_for(received, what="the valid command")
        # the bad ones were sent first; had any been published, it would have arrived first
        assert [body["name"] for _, body in commands] == ["ping"] and commands[0][1]["args"] == {"level": 1.5}
    finally:
        dev.client.loop_stop()
        dev.client.disconnect()


async def test_patch_with_null_is_refused_and_changes_nothing(fleet: httpx.AsyncClient) -> None:
    await fleet.post("/api/devices", json={"id": "null-1", "kind": "pi", "name": "N", "ward": "W", "site": "S",
                                           "tags": ["a"], "latitude": 11.5})
    for field in ("name", "ward", "site", "tags"):
        response = await fleet.patch("/api/devices/null-1", json={field: None})
        assert response.status_code == 422, (field, response.status_code, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", field]
    device = (await fleet.get("/api/devices/null-1")).json()
    assert (device["name"], device["ward"], device["site"], device["tags"]) == ("N", "W", "S", ["a"])
    # a position may be cleared: those two are nullable, and the schema says so
    cleared = await fleet.patch("/api/devices/null-1", json={"latitude": None})
    assert cleared.status_code == 200 and cleared.json()["latitude"] is None
    for field in ("full_name", "role", "disabled", "password"):
        response = await fleet.patch("/api/users/admin-test", json={field: None})
        assert response.status_code == 422, (field, response.status_code)
    schema = (await fleet.get("/openapi.json")).json()["components"]["schemas"]
    update = schema["DeviceUpdate"]["properties"]
    assert update["name"] == {"type": "string", "maxLength": 120, "title": "Name"}
    assert "null" in json.dumps(update["latitude"])


async def test_overlong_ids_and_filters_get_422(fleet: httpx.AsyncClient) -> None:
    """A 64-character device id and long kind= / ward= filters answered 500 (the columns are shorter)."""
    long_id = "d" * 64
    await fleet.post("/api/devices", json={"id": "long-1", "kind": "pi"})
    for path in (f"/api/devices/{long_id}", f"/api/devices/{long_id}/health", f"/api/devices/{long_id}/telemetry",
                 f"/api/devices/{long_id}/desired", "/api/devices/long-1/commands/" + "c" * 65):
        response = await fleet.get(path)
        assert response.status_code == 422, (path, response.status_code)
        assert long_id.encode() not in response.content
    for params in ({"kind": "k" * 17}, {"kind": "toaster"}, {"ward": "w" * 81}, {"tag": "t" * 41}):
        response = await fleet.get("/api/devices", params=params)
        assert response.status_code == 422, (params, response.status_code)
    for params in ({"actor": "a" * 81}, {"action": "a" * 65}, {"target": "t" * 201}):
        assert (await fleet.get("/api/audit", params=params)).status_code == 422
    assert (await fleet.patch("/api/users/" + "u" * 65, json={"full_name": "x"})).status_code == 422
    # PostgreSQL refuses NUL in text: refused before it gets there
    assert (await fleet.get("/api/devices", params={"ward": "a\x00b"})).status_code == 422
    assert (await fleet.get("/api/devices/ab%00cd")).status_code == 422


async def test_out_of_range_times_and_row_ids_get_422(fleet: httpx.AsyncClient) -> None:
    """Found by hand after schemathesis: both answered 500 (SQLite's 64-bit integers, PostgreSQL's dates)."""
    await fleet.post("/api/devices", json={"id": "range-1", "kind": "pi"})
    for since in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):  # past year 9999 / before 1 in UTC
        for path in ("telemetry", "events"):
            response = await fleet.get(f"/api/devices/range-1/{path}", params={"since": since})
            assert response.status_code == 422, (since, path, response.status_code)
            assert response.json()["detail"][0]["loc"] == ["query", "since"]
    assert (await fleet.get("/api/devices/range-1/telemetry", params={"since": "0001-01-01"})).status_code == 200
    for row_id in ("99999999999999999999999", "2147483648", "0"):
        assert (await fleet.delete(f"/api/auth/tokens/{row_id}")).status_code == 422
        assert (await fleet.delete(f"/api/enrollment-tokens/{row_id}")).status_code == 422
    assert (await fleet.delete("/api/auth/tokens/2147483647")).status_code == 404


async def test_validation_errors_do_not_repeat_the_input(fleet: httpx.AsyncClient) -> None:
    big = "p" * 60_000  # under the body limit, over the field's 256 characters
    async with httpx.AsyncClient(base_url=str(fleet.base_url)) as anonymous:
        response = await anonymous.post("/api/auth/login", json={"username": "someone", "password": big})
    assert response.status_code == 422
    assert len(response.content) < 500 and b"ppppp" not in response.content
    assert response.json()["detail"] == [{"loc": ["body", "password"], "type": "string_too_long",
                                          "msg": "String should have at most 256 characters"}]
    many = {f"extra_{i}_{'k' * 100}": i for i in range(200)}  # unknown fields, each named in `loc`
    response = await fleet.post("/api/devices", json={"id": "x-1", "kind": "pi", **many})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == 20 and all(len(str(part)) <= 64 for e in detail for part in e["loc"])
    assert len(response.content) < 6000


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes as an attacker's script would; return all that came back before the close.

    Blocking sockets (run in a thread): the kernel hands over an answer that arrived before a
    reset, where asyncio's streams would drop it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the fleet answered and closed before taking it all: that is the point
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


async def test_an_oversized_body_gets_a_short_413_before_it_is_read(fleet: httpx.AsyncClient) -> None:
    """A 50 MB login body got a 52 MB answer (the 422 repeated it); now: 413 at the declared size."""
    port = fleet.base_url.port
    assert port is not None
    declared = 50 * 1024 * 1024
    head = (b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % declared)
    start = b'{"username": "a", "password": "' + b"x" * 256 * 1024  # the first part of the 50 MB
    answer = await asyncio.to_thread(_exchange, port, head + start)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    assert len(answer) < 2000 and b"request body over the limit of 65536 bytes" in rest
    # chunked, no Content-Length: counted while read, refused at the limit
    head = (b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in [start[i:i + 8192]
                                                                       for i in range(0, len(start), 8192)])
    answer = await asyncio.to_thread(_exchange, port, head + chunks)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert len(answer) < 2000
    # just under the limit is read and judged on its content
    fits = {"username": "a", "password": "x" * 60_000}
    assert (await fleet.post("/api/auth/login", json=fits)).status_code == 422
    # and the service still answers
    assert (await fleet.get("/healthz")).status_code == 200
