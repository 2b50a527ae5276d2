"""An asyncio byte reader over a pyserial port (a UART, a USB adapter, a pseudo-terminal).

The port is opened non-blocking and its file descriptor watched by the event loop, so reading
never holds a thread and a cancelled role stops at once. A port that goes away (a USB adapter
pulled, the other end of a pty closed) raises `serial.SerialException` from `read`.
"""

import asyncio

import serial

READ_MAX = 4096  # bytes taken per wake-up; the OS buffers the rest


class SerialReader:
    def __init__(self, port: str, baudrate: int = 9600) -> None:
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    def open(self) -> None:
        """serial.SerialException if the port cannot be opened (missing, busy, no permission)."""
        self.close()
        self._serial = serial.Serial(self.port, self.baudrate, timeout=0)

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise serial.SerialException(f"{self.port}: not open")
        self._serial.write(data)

    async def read(self, timeout: float) -> bytes:
        """The bytes available within `timeout` seconds (b"" if none came)."""
        port = self._serial
        if port is None:
            raise serial.SerialException(f"{self.port}: not open")
        waiting = port.in_waiting
        if not waiting:
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            fd = port.fileno()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, wake)
            try:
                async with asyncio.timeout(timeout):
                    await ready
            except TimeoutError:
                return b""
            finally:
                loop.remove_reader(fd)
        data: bytes = port.read(min(READ_MAX, max(1, port.in_waiting)))
        return data
