"""Applying a bsdiff4 patch (the BSDIFF40 format) in pure Python, streaming.

PyPI's `bsdiff4` has no wheel for a 32-bit Pi (linux armv7l), and a Pi compiles nothing, so the
agent reads the format itself (the fleet makes the patches with `bsdiff4`):

    "BSDIFF40" | len(ctrl block) | len(diff block) | new size      (8-byte signed integers)
    bz2(ctrl) | bz2(diff) | bz2(extra)

The control block is triples (x, y, z): add x bytes of the diff block to x bytes of the old file
(byte by byte, modulo 256), copy y bytes of the extra block, then move the old file's position by
z. The byte-wise addition runs on Python integers, so the work is done in C: for bytes a and b,
`((a & 0x7f..) + (b & 0x7f..)) ^ ((a ^ b) & 0x80..)` adds every byte without carries crossing.

Nothing is held whole: the old file is read where the control block points, the new file is
written as it is made, at most CHUNK bytes at a time.
"""

import bz2
from collections.abc import Callable, Iterator
from typing import BinaryIO

MAGIC = b"BSDIFF40"
HEADER_BYTES = 32
CHUNK = 1 << 20


class PatchError(ValueError):
    """The patch is not a BSDIFF40 patch of this old file, or does not make what it says."""


def _offtin(raw: bytes) -> int:
    """bsdiff's 8-byte integer: little-endian magnitude, sign in the top bit."""
    value = int.from_bytes(raw, "little") & ~(1 << 63)
    return -value if raw[7] & 0x80 else value


class _Block:
    """One bz2 block of the patch, decompressed on demand, never more than asked for."""

    def __init__(self, patch: BinaryIO, start: int, length: int | None) -> None:
        self._patch = patch
        self._pos = start
        self._end = None if length is None else start + length
        self._bz = bz2.BZ2Decompressor()
        self._pending = b""

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes (PatchError if the block ends first)."""
        parts: list[bytes] = []
        need = size
        while need:
            if self._pending:
                piece, self._pending = self._pending[:need], self._pending[need:]
                parts.append(piece)
                need -= len(piece)
                continue
            if self._bz.eof:
                raise PatchError("a block of the patch ends early")
            if not self._bz.needs_input:
                data = b""
            else:
                want = CHUNK if self._end is None else min(CHUNK, self._end - self._pos)
                if want <= 0:
                    raise PatchError("a block of the patch ends early")
                self._patch.seek(self._pos)
                data = self._patch.read(want)
                if not data:
                    raise PatchError("the patch is truncated")
                self._pos += len(data)
            try:
                self._pending = self._bz.decompress(data, max_length=max(need, 1 << 16))
            except (OSError, EOFError) as err:
                raise PatchError(f"a block of the patch is not bzip2: {err}") from err
        return b"".join(parts)


def _add_bytes(diff: bytes, old: bytes) -> bytes:
    n = len(diff)
    low = int.from_bytes(b"\x7f" * n, "little")
    high = int.from_bytes(b"\x80" * n, "little")
    a = int.from_bytes(diff, "little")
    b = int.from_bytes(old, "little")
    return (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(n, "little")


def _old_bytes(old: BinaryIO, old_size: int, start: int, size: int) -> bytes:
    """`size` bytes of the old file from `start`; bytes outside it count as 0, as in bspatch."""
    lo, hi = max(start, 0), min(start + size, old_size)
    if lo >= hi:
        return bytes(size)
    old.seek(lo)
    return bytes(lo - start) + old.read(hi - lo) + bytes(start + size - hi)


def _controls(ctrl: _Block, new_size: int) -> Iterator[tuple[int, int, int]]:
    made = 0
    while made < new_size:
        raw = ctrl.read(24)
        x, y, z = _offtin(raw[0:8]), _offtin(raw[8:16]), _offtin(raw[16:24])
        if x < 0 or y < 0 or made + x + y > new_size:
            raise PatchError("the patch's control block is corrupt")
        made += x + y
        yield x, y, z


def apply_patch(old: BinaryIO, patch: BinaryIO, new: BinaryIO, *, max_size: int,
                on_bytes: Callable[[bytes], None] | None = None) -> int:
    """Write to `new` the file `patch` makes from `old`; its size. PatchError when the patch is not
    one or says it makes more than `max_size` bytes."""
    patch.seek(0)
    header = patch.read(HEADER_BYTES)
    if len(header) != HEADER_BYTES or header[:8] != MAGIC:
        raise PatchError("not a BSDIFF40 patch")
    ctrl_len, diff_len, new_size = _offtin(header[8:16]), _offtin(header[16:24]), _offtin(header[24:32])
    if ctrl_len < 0 or diff_len < 0 or new_size < 0:
        raise PatchError("the patch's header is corrupt")
    if new_size > max_size:
        raise PatchError("the patch makes a file larger than the release's")
    old_size = old.seek(0, 2)
    ctrl = _Block(patch, HEADER_BYTES, ctrl_len)
    diff = _Block(patch, HEADER_BYTES + ctrl_len, diff_len)
    extra = _Block(patch, HEADER_BYTES + ctrl_len + diff_len, None)
    old_pos = 0
    written = 0

    def out(data: bytes) -> None:
        nonlocal written
        new.write(data)
        written += len(data)
        if on_bytes is not None:
            on_bytes(data)

    for x, y, z in _controls(ctrl, new_size):
        done = 0
        while done < x:
            step = min(CHUNK, x - done)
            out(_add_bytes(diff.read(step), _old_bytes(old, old_size, old_pos + done, step)))
            done += step
        done = 0
        while done < y:
            step = min(CHUNK, y - done)
            out(extra.read(step))
            done += step
        old_pos += x + z
    return written
