# A JSON reader over a stream (a file on flash), for the OTA documents that would not fit the heap
# as one parsed object: an offer (whose metadata text is up to 8 KB) and the metadata itself
# (up to 64 file entries). It walks one object's members; each value is either decoded as a
# string into a sink (the metadata, hashed on the way, to a file) or taken as raw text up to a
# bound and parsed alone with json.loads. Strict where the parts are: a top-level object, keys
# that are strings, no member twice; ValueError for anything else.
import json

from micropython import const

_BUF = const(128)
_ESC = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r",
        0x74: b"\t"}


class Reader:
    def __init__(self, stream):
        self.s = stream
        self.buf = bytearray(_BUF)
        self.n = 0
        self.i = 0

    def byte(self):
        if self.i >= self.n:
            self.n = self.s.readinto(self.buf) or 0
            self.i = 0
            if not self.n:
                raise ValueError("truncated JSON")
        b = self.buf[self.i]
        self.i += 1
        return b

    def peek(self):
        b = self.byte()
        self.i -= 1
        return b

    def ws(self):
        # The next byte that is not white space.
        while True:
            b = self.byte()
            if b not in (0x20, 0x09, 0x0A, 0x0D):
                return b

    def end(self):
        # Nothing but white space is left.
        try:
            self.ws()
        except ValueError:
            return
        raise ValueError("text after the JSON value")

    def string(self, sink=None, most=256):
        # The string whose opening quote was read: decoded, returned as str, or written to sink
        # (a callable taking bytes) when one is given.
        out = bytearray()
        while True:
            b = self.byte()
            if b == 0x22:
                break
            if b == 0x5C:
                e = self.byte()
                if e == 0x75:
                    out += self._unicode()
                elif e in _ESC:
                    out += _ESC[e]
                else:
                    raise ValueError("bad escape")
            elif b < 0x20:
                raise ValueError("control character in a string")
            else:
                out.append(b)
            if sink is not None and len(out) >= 64:
                sink(out)
                out = bytearray()
            elif sink is None and len(out) > most:
                raise ValueError("string too long")
        if sink is not None:
            sink(out)
            return None
        return out.decode()

    def _hex4(self):
        v = 0
        for _ in range(4):
            b = self.byte()
            v = v * 16 + "0123456789abcdef".index(chr(b | 0x20))
        return v

    def _unicode(self):
        v = self._hex4()
        if 0xD800 <= v < 0xDC00:  # a surrogate pair
            if self.byte() != 0x5C or self.byte() != 0x75:
                raise ValueError("lone surrogate")
            lo = self._hex4()
            if not 0xDC00 <= lo < 0xE000:
                raise ValueError("lone surrogate")
            v = 0x10000 + ((v - 0xD800) << 10) + lo - 0xDC00
        elif 0xDC00 <= v < 0xE000:
            raise ValueError("lone surrogate")
        return chr(v).encode()

    def raw(self, first, most, keep=True):
        # The text of the value that starts with byte `first` (already read), at most `most`
        # bytes; the byte after it is left unread. keep=False: skipped, not kept.
        out = bytearray((first,))
        depth = 1 if first in (0x7B, 0x5B) else 0
        quoted = first == 0x22
        if not depth and not quoted:  # a number or a literal: up to the next delimiter
            while self.peek() not in (0x2C, 0x7D, 0x5D, 0x20, 0x09, 0x0A, 0x0D):
                out.append(self.byte())
                if len(out) > most:
                    raise ValueError("value too long")
            return out
        while True:
            b = self.byte()
            if keep:
                out.append(b)
                if len(out) > most:
                    raise ValueError("value too long")
            if quoted:
                if b == 0x5C:
                    e = self.byte()
                    if keep:
                        out.append(e)
                elif b == 0x22:
                    quoted = False
                    if not depth:
                        return out
            elif b == 0x22:
                quoted = True
            elif b in (0x7B, 0x5B):
                depth += 1
            elif b in (0x7D, 0x5D):
                depth -= 1
                if not depth:
                    return out

    def value(self, first, most):
        return json.loads(self.raw(first, most))

    def members(self):
        # The keys of the object that starts here, one at a time; after each the caller reads
        # its value (its first byte from ws()). Ends after the closing brace.
        if self.ws() != 0x7B:
            raise ValueError("not an object")
        seen = []
        b = self.ws()
        if b == 0x7D:
            return
        while True:
            if b != 0x22:
                raise ValueError("a key is a string")
            key = self.string(most=32)
            if key in seen:
                raise ValueError("a member twice")
            seen.append(key)
            if self.ws() != 0x3A:
                raise ValueError("':' expected")
            yield key
            b = self.ws()
            if b == 0x7D:
                return
            if b != 0x2C:
                raise ValueError("',' expected")
            b = self.ws()

    def items(self):
        # The first byte of each element of the array that starts here (then read by the caller).
        if self.ws() != 0x5B:
            raise ValueError("not an array")
        b = self.ws()
        if b == 0x5D:
            return
        while True:
            yield b
            b = self.ws()
            if b == 0x5D:
                return
            if b != 0x2C:
                raise ValueError("',' expected")
            b = self.ws()
