"""schemathesis over the whole API, logged in as an admin, against the real service on SQLite.

schemathesis's own engine runs its phases (examples, coverage, fuzzing, stateful) on every
operation in /openapi.json: schema-valid and schema-violating requests, a bounded number per
operation, derandomized so that a run is repeatable. The property: no request makes the fleet
answer 500, and every answer has a status, content type and body the schema documents. The tally
of statuses lands in test-artifacts/schemathesis.json.
"""

import asyncio
import io
import json
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, events

from fleet.api.routes.relay_feed import FEED_PATH
from fleet.auth.people import AuthError, create_user, issue_token, principal_for
from fleet.auth.roles import Role
from fleet.models import User
from tests.fleet.release_kit import SigningKey, write_keys
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

EXAMPLES_PER_OPERATION = 50
CONFIG = f"""
[generation]
max-examples = {EXAMPLES_PER_OPERATION}
deterministic = true

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
"""


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# POST /api/releases takes a tar of a signed release folder (docs/fleet.md, Releases): bytes of
# any kind, and tars of release folders that are wrong in the ways a tar can be (no signature,
# not JSON, a file missing); a signed one is the releases tests' (the fuzzer holds no key)
schemathesis.openapi.media_type("application/x-tar", st.one_of(
    st.binary(max_size=4096),
    st.sampled_from([
        _tar({}),
        _tar({"release.json": b"not json"}),
        _tar({"release.json": json.dumps({"meta": "{}", "sigs": []}).encode()}),
        _tar({"release.json": json.dumps({"meta": '{"type": "ioc-release"}', "sigs": [
            {"key": "0" * 16, "sig": "AA=="}]}).encode(), "files/app.mpy": b"\x4d"}),
    ])))

# a name the generator does not hit by chance; the stateful phase may still find it (GET
# /api/users) and disable it or log it out, so every request checks it first (`Admin.get`)
ADMIN = "schemathesis-admin"
ADMIN_PASSWORD = "schemathesis admin password 7f3c"


@dataclass
class LiveFleet:
    """The fleet on its own event loop in a thread (schemathesis calls block), and what it answered."""

    base_url: str
    loop: asyncio.AbstractEventLoop
    token: str = ""
    repaired: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def admin_token(self) -> str:
        """The admin's token; a new one if the fuzzer logged it out, revoked it or disabled the admin."""

        async def usable() -> bool:
            try:
                return (await principal_for(self.token)).role == Role.ADMIN if self.token else False
            except AuthError:
                return False

        async def repair() -> str:
            user = await User.get_or_none(username=ADMIN)
            if user is None:
                user = await create_user(ADMIN, ADMIN_PASSWORD, Role.ADMIN)
            user.disabled, user.role = False, Role.ADMIN.value
            await user.save()
            token, _ = await issue_token(user, "session", "schemathesis", timedelta(hours=1))
            return token

        if not self.run(usable()):
            self.token = self.run(repair())
            self.repaired += 1
        return self.token


@pytest.fixture
def live_fleet(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[LiveFleet]:
    # with a release key, as a fleet that takes releases runs (without one, a publish is 503)
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, ota_dir=tmp_path / "ota",
                              ota_keys=write_keys(tmp_path / "release-keys.pem", SigningKey.new()))
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"], holder["loop"] = stop, asyncio.get_running_loop()
        try:
            async with running_fleet(settings):
                ready.set()
                await stop.wait()
        except BaseException as err:  # handed to the test below
            holder["error"] = err
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="fleet-under-schemathesis", daemon=True)
    thread.start()
    assert ready.wait(60), "the fleet did not start"
    if "error" in holder:
        raise holder["error"]
    try:
        yield LiveFleet(f"http://127.0.0.1:{settings.http_port}", holder["loop"])
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(60)


# ~80 operations, the audio library's among them (each valid upload or text-to-speech runs ffmpeg):
# longer than the suite's 300 s per test on 2 cores
@pytest.mark.timeout(1500)
def test_no_request_makes_the_api_fail(live_fleet: LiveFleet, artifacts_dir: Path) -> None:
    token = live_fleet.admin_token()
    schema = schemathesis.openapi.from_url(f"{live_fleet.base_url}/openapi.json",
                                           config=schemathesis.Config.from_str(CONFIG),
                                           headers={"Authorization": f"Bearer {token}"})
    # the live feed answers a valid request with a stream that never ends: its refusals (422, 401,
    # 503) are checked by tests/fleet/test_relay_feed.py
    schema = schema.exclude(path=FEED_PATH)

    @schema.auth(refresh_interval=None)
    class Admin:
        def get(self, case: Any, context: Any) -> str:
            return live_fleet.admin_token()

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    @schema.hook("after_call")
    def tally(context: Any, case: Any, response: Any) -> None:
        live_fleet.statuses[response.status_code] += 1
        live_fleet.by_operation.setdefault(case.operation.label, Counter())[response.status_code] += 1

    failures: list[str] = []
    operations = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            operations.add(event.recorder.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE:
                        info = check.failure_info
                        what = f"{info.failure.title}: {info.failure.message[:300]}" if info else ""
                        failures.append(f"{event.recorder.label}: {check.name}: {what}")
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception

    report = {
        "cases": sum(live_fleet.statuses.values()),
        "operations": len(live_fleet.by_operation),
        "statuses": {str(k): v for k, v in sorted(live_fleet.statuses.items())},
        "admin_session_repaired": live_fleet.repaired - 1,
        "by_operation": {op: {str(k): v for k, v in sorted(c.items())}
                         for op, c in sorted(live_fleet.by_operation.items())},
        "failures": sorted(set(failures)),
    }
    (artifacts_dir / "schemathesis.json").write_text(json.dumps(report, indent=1))
    print(f"schemathesis: {report['cases']} requests over {report['operations']} operations, "
          f"statuses {report['statuses']}")
    assert live_fleet.statuses[500] == 0, report["by_operation"]
    assert not failures, "\n".join(sorted(set(failures)))
