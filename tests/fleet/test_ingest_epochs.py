"""A device whose counter went back, and streams whose end a later birth tells (issue 9 §3, §5).

Scripted devices on a real Mosquitto, the fleet's ingest on SQLite and PostgreSQL; the fleet is
restarted where the broker's retained births matter.
"""

from typing import Any

from tests.fleet.streams_view import database_url, device_row, gaps, settled_stats, stored_stamps
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

__all__ = ["database_url"]  # the fixture, imported for pytest

BOOT_OLD = {"n": 5, "reason": "start"}  # the device's life before it lost its counter
BOOT_NEW = {"n": 1, "reason": "start"}  # after: its boot count restarted with it


def _health(dev: ScriptedDevice, ses: int, seqs: range | list[int], **data: Any) -> int:
    for seq in seqs:
        dev.send("health", seq=seq, ses=ses, up_s=1, fw="0.1.0", **data)
    return len(seqs)


async def test_a_loss_at_the_end_of_a_stream_shows_as_a_gap_once_the_next_birth_says_how_far_it_went(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=10, will=False)
    try:
        async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
            dev.birth(next_seq=0)
            sent = 1 + _health(dev, 10, range(5))  # 0-4 stored; 5-8 went to a fleet that was killed
            await settled_stats(http, received=sent)
            assert await gaps(device_id) == [], "nothing says stream 10 went further"
            dev.ses = 11
            dev.birth(next_seq=0, prev={"ses": 10, "next_seq": 9})
            sent += 1
            await settled_stats(http, received=sent)
            assert await gaps(device_id) == [], "the device may still be sending stream 10's backlog"
            sent += _health(dev, 11, [0])  # stream 11's first message: stream 10 has all been sent
            stats = await settled_stats(http, received=sent)
            assert await gaps(device_id) == [(0, 10, 5, 8, True)]
            assert stats["gaps_opened"] == 1
            dev.birth(next_seq=0, prev={"ses": 10, "next_seq": 9})  # the same birth again (a redelivery)
            sent += 1 + _health(dev, 11, [1])
            stats = await settled_stats(http, received=sent)
            assert await gaps(device_id) == [(0, 10, 5, 8, True)] and stats["gaps_opened"] == 1
        async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
            # a restarted fleet: the broker replays the retained birth 11 with its prev
            sent = 1 + _health(dev, 11, [2])
            await settled_stats(http, received=sent)
            assert await gaps(device_id) == [(0, 10, 5, 8, True)], "applied twice, one gap"
            sent += _health(dev, 10, [6, 5, 8, 7])  # the lost ones after all: late arrivals
            stats = await settled_stats(http, received=sent)
            assert stats["late"] == 4 and stats["duplicates"] == 0
            closed = await gaps(device_id)
            assert closed and not any(is_open for *_, is_open in closed), "filled: no gap left open"
            assert sorted(q for _, s, q in await stored_stamps(device_id) if s == 10) == list(range(9))
    finally:
        dev.clear_retained()
        dev.close()


async def test_a_stream_whose_tail_is_still_queued_when_the_birth_comes_shows_no_gap(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    """A backlog sent after the birth that ends its stream is not taken for a loss, even for a moment."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=20, will=False)
    try:
        async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
            dev.birth()
            sent = 1 + _health(dev, 20, range(3))
            dev.ses = 21
            dev.birth(prev={"ses": 20, "next_seq": 50})
            sent += 1
            await settled_stats(http, received=sent)
            sent += _health(dev, 20, range(3, 50))  # the queue's backlog, in stamp order
            sent += _health(dev, 21, range(2))
            stats = await settled_stats(http, received=sent)
            assert await gaps(device_id) == [] and stats["gaps_opened"] == 0
    finally:
        dev.clear_retained()
        dev.close()


async def test_a_counter_that_restarted_and_takes_the_same_numbers_again_starts_a_new_epoch(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    """An older device (or agent) that restarted its counter at 0: boot stream 1, connection 2, as before."""
    async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
        old = ScriptedDevice(mosquitto.port, device_id, ses=2, will=False)
        old.birth(boot=BOOT_OLD)
        sent = 1 + _health(old, 1, range(3), cpu_pct=1.0) + _health(old, 2, range(4), cpu_pct=1.0)
        old.death(reason="shutdown")
        old.close()
        sent += 1
        await settled_stats(http, received=sent)
        new = ScriptedDevice(mosquitto.port, device_id, ses=2, will=False)
        new.birth(boot=BOOT_NEW, prev={"ses": 1, "next_seq": 3})
        sent += 1 + _health(new, 1, range(3), cpu_pct=2.0) + _health(new, 2, range(5), cpu_pct=2.0)
        stats = await settled_stats(http, received=sent)
        assert stats["duplicates"] == 0, "no new message taken for an old one"
        stamps = await stored_stamps(device_id)
        assert sorted(stamps) == sorted([(0, 1, q) for q in range(3)] + [(0, 2, q) for q in range(4)]
                                        + [(1, 1, q) for q in range(3)] + [(1, 2, q) for q in range(5)])
        device = await device_row(device_id)
        assert (device.epoch, device.session, device.online) == (1, 2, True)
        assert device.birth["boot"] == BOOT_NEW, "its birth was applied"
        assert await gaps(device_id) == [], "prev: stream 1 of the new epoch arrived whole"
        new.birth(boot=BOOT_NEW, prev={"ses": 1, "next_seq": 3})  # redelivered: the same birth
        sent += 1 + _health(new, 2, [5])
        await settled_stats(http, received=sent)
        assert (await device_row(device_id)).epoch == 1
    async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
        # the broker replays the retained birth (the new life's) and death (the old life's, same
        # number): no further epoch; offline until the next birth (docs/protocol.md, "Presence")
        _health(new, 2, [6])
        await settled_stats(http, received=3)
        device = await device_row(device_id)
        assert (device.epoch, device.session, device.online) == (1, 2, False)
        assert (1, 2, 6) in await stored_stamps(device_id)
    new.clear_retained()
    new.close()


async def test_a_live_birth_below_the_session_on_record_starts_a_new_epoch(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
        old = ScriptedDevice(mosquitto.port, device_id, ses=50, will=False)
        old.birth(boot=BOOT_OLD)
        sent = 1 + _health(old, 50, range(3))
        new = ScriptedDevice(mosquitto.port, device_id, ses=7, will=False)
        new.birth(boot=BOOT_NEW)
        sent += 1 + _health(new, 7, range(3)) + _health(new, 50, range(3))  # even its own stream 50
        stats = await settled_stats(http, received=sent)
        assert stats["duplicates"] == 0
        assert sorted(await stored_stamps(device_id)) == sorted(
            [(0, 50, q) for q in range(3)] + [(1, 7, q) for q in range(3)] + [(1, 50, q) for q in range(3)])
        device = await device_row(device_id)
        assert (device.epoch, device.session, device.online) == (1, 7, True)
        old.close()
        new.clear_retained()
        new.close()
