"""Where the sensor role's samples come from: an SDS011 on a UART, or Modbus RTU registers.

A source is opened, read until it fails, closed; the role reopens it with a capped backoff.
`read()` returns the samples that came within `timeout` (possibly none), each a mapping of
reading name to value. Failures are `SourceError`; the role counts them as read errors.
"""

import abc
import asyncio
import time
from collections.abc import Sequence
from typing import Literal

import serial

from edge.errors import EdgeError
from edge.serialio.port import SerialReader
from edge.serialio.sds011 import Sds011Parser


class SourceError(EdgeError):
    """The sensor could not be opened or read (port missing, line dead, no Modbus answer)."""


Sample = dict[str, float]


class Source(abc.ABC):
    frames = 0  # good frames / answers
    bad = 0  # bytes or answers that made no sense
    opened = 0  # successful opens

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def read(self, timeout: float) -> list[Sample]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Sds011Source(Source):
    def __init__(self, port: str, baudrate: int = 9600) -> None:
        self.reader = SerialReader(port, baudrate)
        self.parser = Sds011Parser()

    async def open(self) -> None:
        try:
            self.reader.open()
        except (serial.SerialException, OSError) as err:
            raise SourceError(f"{self.reader.port}: {err}") from err
        self.opened += 1

    async def read(self, timeout: float) -> list[Sample]:
        try:
            data = await self.reader.read(timeout)
        except (serial.SerialException, OSError) as err:
            raise SourceError(f"{self.reader.port}: {err}") from err
        found = [{"pm25": r.pm25, "pm10": r.pm10} for r in self.parser.feed(data)]
        self.frames, self.bad = self.parser.frames, self.parser.bad
        return found

    def close(self) -> None:
        self.reader.close()


class Register:
    """One Modbus register read as a named reading: value = raw (signed if asked) × scale."""

    def __init__(self, name: str, address: int, kind: Literal["holding", "input"], scale: float, signed: bool) -> None:
        self.name = name
        self.address = address
        self.kind = kind
        self.scale = scale
        self.signed = signed

    def value(self, raw: int) -> float:
        if self.signed and raw >= 0x8000:
            raw -= 0x10000
        return raw * self.scale


class ModbusSource(Source):
    """Polls registers every `poll_s` over Modbus RTU (pymodbus' asyncio serial client)."""

    def __init__(
        self, port: str, baudrate: int, device_id: int, registers: Sequence[Register], poll_s: float, timeout_s: float
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.device_id = device_id
        self.registers = list(registers)
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._client: object | None = None
        self._next = time.monotonic()

    async def open(self) -> None:
        from pymodbus.client import AsyncModbusSerialClient  # optional dependency: the `sensors` extra

        client = AsyncModbusSerialClient(
            self.port, baudrate=self.baudrate, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise SourceError(f"{self.port}: cannot open the Modbus line")
        self._client = client
        self._next = time.monotonic()
        self.opened += 1

    async def read(self, timeout: float) -> list[Sample]:
        from pymodbus.exceptions import ModbusException

        client = self._client
        assert client is not None, "read before open"
        wait = self._next - time.monotonic()
        if wait > timeout:
            await asyncio.sleep(timeout)
            return []
        await asyncio.sleep(max(0.0, wait))
        self._next = max(self._next + self.poll_s, time.monotonic())
        sample: Sample = {}
        for reg in self.registers:
            call = client.read_holding_registers if reg.kind == "holding" else client.read_input_registers  # type: ignore[attr-defined]
            try:
                answer = await call(reg.address, count=1, device_id=self.device_id)
            except (ModbusException, OSError) as err:
                self.bad += 1
                raise SourceError(f"{self.port}: register {reg.address}: {err}") from err
            if answer.isError():
                self.bad += 1
                raise SourceError(f"{self.port}: register {reg.address}: {answer}")
            sample[reg.name] = reg.value(answer.registers[0])
        self.frames += 1
        return [sample]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[attr-defined]
            self._client = None
