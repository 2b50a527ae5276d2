"""Reachability of a third-party device: TCP connect to its ports, and ICMP echo where the Pi lets
an unprivileged process ping.

ICMP uses a datagram ICMP socket (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`), which Linux grants
to the groups in `net.ipv4.ping_group_range`; the agent never needs root or CAP_NET_RAW. Where the
socket is refused, ICMP is "not available" (health `icmp: "unavailable"`) and only TCP counts.
"""

import asyncio
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TcpResult:
    open_ports: list[int]
    connect_ms: int | None  # the fastest connect, None when none answered


async def tcp_check(host: str, ports: list[int], timeout_s: float) -> TcpResult:
    """Connect to each port (at once), close at once; a port is open if the connect completes in time."""

    async def one(port: int) -> int | None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return int((time.monotonic() - started) * 1000)

    times = await asyncio.gather(*(one(p) for p in ports))
    found = [t for t in times if t is not None]
    return TcpResult([p for p, t in zip(ports, times, strict=True) if t is not None], min(found) if found else None)


def icmp_available() -> bool:
    """Whether this process may open an unprivileged ICMP socket (net.ipv4.ping_group_range)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError:
        return False
    sock.close()
    return True


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(host: str, timeout_s: float) -> int | None:
    """One echo request; the round trip in ms, or None (no answer in time, or no ICMP socket).
    Blocking: the role runs it in a thread."""
    try:
        address = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError:
        return None
    with sock:
        sock.settimeout(timeout_s)
        seq = int.from_bytes(os.urandom(2), "big")
        header = struct.pack("!BBHHH", 8, 0, 0, 0, seq)  # the kernel sets the identifier
        payload = b"ioc-child"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), 0, seq) + payload
        started = time.monotonic()
        deadline = started + timeout_s
        try:
            sock.sendto(packet, (address, 0))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                reply = sock.recv(1024)
                if len(reply) >= 8 and reply[0] == 0 and struct.unpack("!H", reply[6:8])[0] == seq:
                    return int((time.monotonic() - started) * 1000)
        except OSError:
            return None
    return None
