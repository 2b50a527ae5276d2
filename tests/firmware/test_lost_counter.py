"""The ESP32 firmware loses state.json and comes back to a fleet that stored its old streams (issue 9 §3).

The real MicroPython under a 64 KB heap, a private Mosquitto, the fleet's real ingest on SQLite and
PostgreSQL. Measured before the fix: the board restarted its counter at 0, took stream numbers 1
and 2 again, and the fleet dropped its new messages as duplicates and ignored its birth.
"""

import json
from collections.abc import Callable
from typing import Any

from tests.edge.helpers import until
from tests.firmware.support import HostBoard
from tests.fleet.streams_view import database_url, device_row, gaps, settled_stats, stored_stamps
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

__all__ = ["database_url"]  # the fixture, imported for pytest

Boards = Callable[..., HostBoard]
HEALTH_PER_RUN = 4  # health reports each run sends in its connection's stream before it is stopped


def _device_messages(probe: Probe, since: int) -> list[tuple[str, dict[str, Any]]]:
    return [(t.rsplit("/", 1)[-1], json.loads(p)) for t, p, _ in list(probe.messages)[since:] if p]


def _numbered(messages: list[tuple[str, dict[str, Any]]]) -> set[tuple[int, int]]:
    return {(m["ses"], m["seq"]) for _, m in messages if "seq" in m}


async def _run(board: HostBoard, probe: Probe) -> list[tuple[str, dict[str, Any]]]:
    """Boot the board, let it report HEALTH_PER_RUN times once connected, stop it (Ctrl-C): what it sent."""
    since = len(probe.messages)
    board.start()

    def reports() -> bool:
        sent = _device_messages(probe, since)
        births = [m["ses"] for kind, m in sent if kind == "birth"]
        return bool(births) and sum(1 for kind, m in sent if kind == "health" and m["ses"] == births[-1]) \
            >= HEALTH_PER_RUN

    await until(reports, "the board's reports", within=30)
    assert board.stop() == 0
    await until(lambda: any(kind == "death" for kind, _ in _device_messages(probe, since)), "its death")
    return _device_messages(probe, since)


async def test_a_board_that_lost_state_json_has_every_new_message_stored_and_its_birth_applied(
        database_url: str, mosquitto: Mosquitto, device_id: str, boards: Boards, probe: Probe) -> None:
    board = boards(device_id)
    async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
        before = await _run(board, probe)
        (board.path / "state.json").unlink()
        after = await _run(board, probe)
        stats = await settled_stats(http, received=len(_device_messages(probe, 0)))
        old, new = _numbered(before), _numbered(after)
        stored_new = stats["stored"] - len(old)
        figures = (f"{stats['duplicates']} of {len(new)} new messages dropped as duplicates, {stored_new} stored; "
                   f"first run's streams {sorted({s for s, _ in old})}, second run's {sorted({s for s, _ in new})}")
        assert stats["duplicates"] == 0 and stored_new == len(new), figures
        stamps = await stored_stamps(device_id)
        assert sum(stamps.values()) == len(old) + len(new) and max(stamps.values()) == 1
        birth = [m for kind, m in after if kind == "birth"][-1]
        assert (await device_row(device_id)).birth == birth, "the new birth was applied"
        assert await gaps(device_id) == []
    assert min(s for s, _ in new) > 2**47 and not {s for s, _ in new} & {s for s, _ in old}
    assert board.file("state.json")["boots"] == 1, "the boot count restarted with it"
    # the birth says how far the stream opened at boot went, if anything was stamped in it
    made_at_boot = len({q for s, q in new if s == birth["ses"] - 1})
    assert birth.get("prev") == ({"ses": birth["ses"] - 1, "next_seq": made_at_boot} if made_at_boot else None)
