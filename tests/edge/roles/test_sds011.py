"""The SDS011 frame parser: real frames, garbage, bad checksums, frames cut across reads."""

from edge.serialio.sds011 import Sds011Parser, frame


def test_frames_in_any_chunking_with_garbage_are_recovered() -> None:
    values = [(12.3, 20.1), (0.0, 0.0), (999.9, 1999.9), (35.5, 60.0)]
    stream = b"\x00\xab\xaa" + frame(*values[0]) + b"\xaa\xc0\x01\x02" + frame(*values[1])
    bad = bytearray(frame(50, 50))
    bad[8] ^= 0xFF  # wrong checksum
    stream += bytes(bad) + frame(*values[2]) + b"\xaa" + frame(*values[3])
    for size in (1, 3, 7, 10, len(stream)):
        parser = Sds011Parser()
        got = []
        for i in range(0, len(stream), size):
            got += [(r.pm25, r.pm10) for r in parser.feed(stream[i : i + size])]
        assert got == values, f"chunks of {size}"
        assert parser.frames == 4 and parser.bad > 0


def test_a_frame_has_the_documented_layout() -> None:
    f = frame(12.3, 45.6, sensor_id=0xBEEF)
    assert f[:2] == b"\xaa\xc0" and f[-1] == 0xAB and len(f) == 10
    assert (f[3] << 8 | f[2], f[5] << 8 | f[4]) == (123, 456)
    assert f[8] == sum(f[2:8]) & 0xFF
    (reading,) = Sds011Parser().feed(f)
    assert reading.sensor_id == 0xBEEF
