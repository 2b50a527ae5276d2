"""Mosquitto's dynamic-security file holds every account's password hash (issue 8, finding 13).

It is made readable by its owner only, and stays so after the broker has rewritten it with the
accounts the fleet made (Mosquitto rewrites it in place on every change).
"""

import stat
from pathlib import Path

from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto


async def test_dynamic_security_file_is_private_after_the_fleet_changed_it(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    assert stat.S_IMODE(broker.dynsec_file.stat().st_mode) == 0o600
    broker.start()
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url, broker_accounts="dynsec")
    try:
        async with fleet_in_thread(settings) as http:
            assert (await http.post("/api/devices", json={"id": "dev-file", "kind": "pi"})).status_code == 201
            assert (await http.post("/api/devices/dev-file/credentials")).status_code == 200
    finally:
        broker.kill()
    text = broker.dynsec_file.read_text()
    assert '"dev-file"' in text  # the broker wrote the fleet's changes to it
    assert stat.S_IMODE(broker.dynsec_file.stat().st_mode) == 0o600
