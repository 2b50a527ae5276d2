# The Nova SDS011 particulate sensor's UART frame (9600 8N1, one frame a second in active mode):
#   AA C0 pm25_lo pm25_hi pm10_lo pm10_hi id_lo id_hi checksum AB
# checksum = sum of the six data bytes & 0xFF; PM values in tenths of ug/m3. Pure code.
# The parser takes bytes as they come; after garbage, a bad checksum or a frame cut short it
# resynchronises on the next AA C0, holding at most one frame's worth of bytes.
HEAD = 0xAA
CMD = 0xC0
TAIL = 0xAB
FRAME = 10


class Parser:
    def __init__(self):
        self.buf = bytearray()
        self.good = 0
        self.bad = 0  # frames with a wrong checksum or tail, and bytes skipped while hunting

    def feed(self, data):
        # -> [(pm25_tenths, pm10_tenths)] of the complete valid frames in buf + data
        buf = self.buf
        buf.extend(data)
        out = []
        while True:
            i = buf.find(b"\xaa\xc0")
            if i < 0:
                # keep a trailing AA: it may start the next frame
                keep = 1 if buf and buf[-1] == HEAD else 0
                self.bad += len(buf) - keep
                self.buf = buf = buf[len(buf) - keep:]
                return out
            if i:
                self.bad += i
                buf = buf[i:]
            if len(buf) < FRAME:
                self.buf = buf
                return out
            if buf[9] == TAIL and sum(buf[2:8]) & 0xFF == buf[8]:
                self.good += 1
                out.append((buf[2] | buf[3] << 8, buf[4] | buf[5] << 8))
                buf = buf[FRAME:]
            else:
                self.bad += 1
                buf = buf[1:]  # not a frame after all: hunt from the next byte


def frame(pm25_tenths, pm10_tenths, dev_id=0x1234):
    # A valid frame (for tests and for a sensor stand-in).
    d = bytes((pm25_tenths & 0xFF, pm25_tenths >> 8, pm10_tenths & 0xFF, pm10_tenths >> 8,
               dev_id & 0xFF, dev_id >> 8))
    return bytes((HEAD, CMD)) + d + bytes((sum(d) & 0xFF, TAIL))
