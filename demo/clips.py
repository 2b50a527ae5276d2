"""The demo's announcement clip, made at start-up (no audio file in the repository).

A two-tone chime ("ding-dong", as before a ward announcement) synthesised as 8 kHz, 16-bit mono
PCM WAV, 2 s, 32 KB: what the operator uploads to the fleet's audio library (demo/operator.py),
which makes the speakers' variants of it (ESP32: WAV 16 kHz mono, 64 KB, within the node's
512 KB clip budget; Pi: WAV 48 kHz mono).
"""

import array
import hashlib
import math
import wave
from dataclasses import dataclass
from pathlib import Path

RATE = 8000
TONES = ((659.25, 0.0), (523.25, 0.7))  # E5 then C5 (Hz, start s): the classic two-note chime
LENGTH_S = 2.0


@dataclass(frozen=True)
class Clip:
    path: Path
    sha256: str
    bytes: int


def _samples() -> "array.array[int]":
    out = array.array("h", bytes(2 * int(RATE * LENGTH_S)))
    for freq, start in TONES:
        first = int(start * RATE)
        for i in range(len(out) - first):
            t = i / RATE
            envelope = math.exp(-3.0 * t) * min(1.0, t / 0.005)  # a bell: quick attack, slow decay
            value = out[first + i] + 9000 * envelope * (math.sin(2 * math.pi * freq * t)
                                                        + 0.3 * math.sin(4 * math.pi * freq * t))
            out[first + i] = max(-32768, min(32767, int(value)))
    return out


def make_chime(folder: Path, name: str = "chime") -> Clip:
    """Write `<folder>/<name>.wav` (again, if it is there) and describe it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(_samples().tobytes())
    data = path.read_bytes()
    return Clip(path, hashlib.sha256(data).hexdigest(), len(data))
