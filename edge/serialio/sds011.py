"""The Nova SDS011 particulate sensor's UART frame (9600 8N1, one frame a second, active mode):

    AA C0 pm25_lo pm25_hi pm10_lo pm10_hi id_lo id_hi checksum AB

checksum = sum of the six data bytes & 0xFF; PM values in tenths of µg/m³. The same frame and
the same resynchronisation as the ESP32 sensor node (`firmware/app_a/roles/sds011.py`). Pure code.
"""

from dataclasses import dataclass

HEAD = 0xAA
COMMAND = 0xC0
TAIL = 0xAB
FRAME_BYTES = 10
_START = bytes((HEAD, COMMAND))


@dataclass(frozen=True, slots=True)
class Reading:
    pm25: float  # µg/m³
    pm10: float
    sensor_id: int


class Sds011Parser:
    """Takes bytes as they come; after garbage, a bad checksum or a frame cut short it
    resynchronises on the next AA C0. It holds at most one frame's worth of bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.bad = 0  # frames with a wrong checksum or tail, plus bytes skipped while hunting

    def feed(self, data: bytes) -> list[Reading]:
        buf = self._buffer
        buf.extend(data)
        out: list[Reading] = []
        while True:
            start = buf.find(_START)
            if start < 0:
                keep = 1 if buf and buf[-1] == HEAD else 0  # a trailing AA may start the next frame
                self.bad += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            if start:
                self.bad += start
                del buf[:start]
            if len(buf) < FRAME_BYTES:
                return out
            if buf[9] == TAIL and sum(buf[2:8]) & 0xFF == buf[8]:
                self.frames += 1
                out.append(
                    Reading(
                        pm25=(buf[2] | buf[3] << 8) / 10,
                        pm10=(buf[4] | buf[5] << 8) / 10,
                        sensor_id=buf[6] | buf[7] << 8,
                    )
                )
                del buf[:FRAME_BYTES]
            else:
                self.bad += 1
                del buf[:1]  # not a frame after all: hunt from the next byte


def frame(pm25: float, pm10: float, sensor_id: int = 0x1234) -> bytes:
    """A valid frame (for tests and for a sensor stand-in); values are clipped to 0..6553.5."""
    a = max(0, min(0xFFFF, round(pm25 * 10)))
    b = max(0, min(0xFFFF, round(pm10 * 10)))
    data = bytes((a & 0xFF, a >> 8, b & 0xFF, b >> 8, sensor_id & 0xFF, (sensor_id >> 8) & 0xFF))
    return _START + data + bytes((sum(data) & 0xFF, TAIL))
