"""edge/bspatch.py reads what the fleet's bsdiff4 writes (BSDIFF40), and refuses what is not a patch."""

import io
import random

import bsdiff4
import pytest

from edge.bspatch import PatchError, apply_patch


def patched(old: bytes, delta: bytes, max_size: int = 1 << 30) -> bytes:
    out = io.BytesIO()
    apply_patch(io.BytesIO(old), io.BytesIO(delta), out, max_size=max_size)
    return out.getvalue()


@pytest.mark.parametrize("seed", range(12))
def test_every_bsdiff4_patch_makes_the_new_file(seed: int) -> None:
    rng = random.Random(seed)
    old = rng.randbytes(rng.choice([0, 1, 300, 70_000, 2_500_000]))
    new = bytearray(old)
    for _ in range(rng.randrange(0, 40)):  # changed bytes, inserted and removed runs
        if new and rng.random() < 0.5:
            new[rng.randrange(len(new))] = rng.randrange(256)
        elif rng.random() < 0.5:
            at = rng.randrange(len(new) + 1)
            new[at:at] = rng.randbytes(rng.randrange(1, 5000))
        elif new:
            at = rng.randrange(len(new))
            del new[at:at + rng.randrange(1, 5000)]
    delta = bsdiff4.diff(old, bytes(new))
    assert patched(old, delta) == bytes(new)


def test_what_is_not_a_patch_of_the_right_size_is_refused() -> None:
    old, new = b"a" * 1000, b"a" * 500 + b"b" * 600
    delta = bsdiff4.diff(old, new)
    with pytest.raises(PatchError, match="not a BSDIFF40"):
        patched(old, b"BSDIFF39" + delta[8:])
    with pytest.raises(PatchError, match="larger"):
        patched(old, delta, max_size=len(new) - 1)
    with pytest.raises(PatchError):
        patched(old, delta[:len(delta) // 2])  # truncated (the hash of what it makes is checked anyway)
    with pytest.raises(PatchError):
        patched(old, delta[:32] + b"\0" * (len(delta) - 32))  # blocks that are not bzip2
