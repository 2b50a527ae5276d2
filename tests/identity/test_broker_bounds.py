"""The embedded broker's bounds on their own: admission, password checks, packet framing."""

import asyncio

import pytest

from fleet.auth.secrets import hash_password
from fleet.broker_auth.admission import ADDRESS_TABLE_MAX, Admission, BrokerBounds, Refusal
from fleet.broker_auth.limits import DEVICE_PAYLOAD_MAX, PACKET_OVERHEAD
from fleet.broker_auth.password_checks import Check, PasswordChecker
from fleet.broker_auth.wire import LimitedReader, PacketTooLarge, WireError, parse_connect, read_connect


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admission_rate_per_address_and_cap() -> None:
    clock = Clock()
    admission = Admission(BrokerBounds(max_connections=50, connects_per_s=2.0, connect_burst=5), clock)
    assert [admission.open("10.0.0.1") for _ in range(6)] == [None] * 5 + [Refusal.RATE]
    assert admission.open("10.0.0.2") is None  # another address has its own bucket
    clock.now += 1.0  # two tokens back
    assert [admission.open("10.0.0.1") for _ in range(3)] == [None, None, Refusal.RATE]
    assert admission.open_count == 8
    for n in range(42):
        assert admission.open(f"10.1.0.{n}") is None
    assert admission.open("10.2.0.1") is Refusal.CAP and admission.open_count == 50
    admission.close()
    assert admission.open("10.2.0.1") is None


def test_admission_address_table_is_bounded() -> None:
    clock = Clock()
    admission = Admission(BrokerBounds(max_connections=10**6, connects_per_s=1.0, connect_burst=2), clock)
    for n in range(ADDRESS_TABLE_MAX * 2):
        admission.open(f"a{n}")
        admission.close()
    assert len(admission._buckets) <= ADDRESS_TABLE_MAX


async def test_password_checks_cached_forgotten_and_bounded() -> None:
    stored = hash_password("right-password")
    checker = PasswordChecker(max_waiting=2)
    try:
        assert await checker.check("dev-a", "wrong-password", stored) is Check.WRONG
        assert await checker.check("dev-a", "right-password", stored) is Check.OK
        # a rotated credential has another stored hash: the remembered success does not apply
        assert await checker.check("dev-a", "right-password", hash_password("new-password")) is Check.WRONG
        checker.forget("dev-a")
        assert not checker._cache
        # more checks at once than the bound: the excess is not checked at all
        results = await asyncio.gather(*(checker.check("dev-b", f"guess-{n}", stored) for n in range(6)))
        assert results.count(Check.BUSY) == 4 and results.count(Check.WRONG) == 2
    finally:
        checker.close()


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def _publish(topic: str, payload_size: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode() + b"\x00\x01" + b"x" * payload_size
    length, remaining = bytearray(), len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length.append(byte | (0x80 if remaining else 0))
        if not remaining:
            break
    return bytes((0x32,)) + bytes(length) + body


async def test_limited_reader_passes_packets_and_stops_oversized_ones() -> None:
    topic = "ioc/v1/d/dev-a/health"
    ok = _publish(topic, DEVICE_PAYLOAD_MAX)
    reader = LimitedReader(_reader(ok + _publish(topic, DEVICE_PAYLOAD_MAX + 1)), b"\xc0\x00",
                           payload_max=DEVICE_PAYLOAD_MAX, who="dev-a")
    assert await reader.read(2) == b"\xc0\x00"  # the buffered first packet
    assert b"".join([await reader.read(1) for _ in range(4)]) + await reader.read(len(ok) - 4) == ok
    with pytest.raises(PacketTooLarge):
        await reader.read(1)
    huge = bytes((0x30, 0xFF, 0xFF, 0xFF, 0x7F))  # a 256 MB packet: refused from its header alone
    with pytest.raises(PacketTooLarge):
        await LimitedReader(_reader(huge), b"", payload_max=DEVICE_PAYLOAD_MAX, who="dev-a").read(1)
    subscribe = bytes((0x82, 0xFF, 0x7F))  # any packet type over payload + overhead
    assert 0x3FFF > DEVICE_PAYLOAD_MAX + PACKET_OVERHEAD
    with pytest.raises(PacketTooLarge):
        await LimitedReader(_reader(subscribe), b"", payload_max=DEVICE_PAYLOAD_MAX, who="dev-a").read(1)


async def test_connect_reading_refuses_what_is_not_a_small_connect() -> None:
    with pytest.raises(WireError):
        await read_connect(_reader(b"\x30\x02ab"), 100)  # not a CONNECT first
    with pytest.raises(WireError):
        await read_connect(_reader(b"\x10\xff\xff\x01"), 100)  # too long
    with pytest.raises(WireError):
        await read_connect(_reader(b"\x10\x80\x80\x80\x80\x01"), 10**9)  # a 5-byte length
    with pytest.raises(asyncio.IncompleteReadError):
        await read_connect(_reader(b"\x10\x05ab"), 100)  # cut short
    with pytest.raises(WireError):
        await parse_connect(b"\x10\x04\x00\x02\xff\xfe")  # garbage inside
