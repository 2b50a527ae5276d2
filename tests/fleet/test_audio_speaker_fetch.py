"""The speakers' own download code fetches clips from the fleet's tokenised URL: the ESP32 node's
`roles/clip_fetch.py` under the real MicroPython (64 KB heap: its HTTP/1.0 request, its 2,048-byte
header bound) and the Pi role's checked cache (`edge/roles/speaker_cache.py`, httpx). Each file is
checked by the node itself (length and SHA-256) and is the WAV format docs/broadcasts.md gives for
its kind."""

import asyncio
import hashlib
import json
import subprocess
import wave
from pathlib import Path

import httpx

from edge.roles.speaker_cache import ClipCache
from provisioning.hostboard import MICROPYTHON
from tests.fleet.audio_kit import audio_fleet
from tests.support.mosquitto import Mosquitto

SLOT = Path(__file__).resolve().parents[2] / "firmware" / "app_a"
FETCH = """
import sys, json
sys.path.insert(0, {slot!r})
import os
os.mkdir("clips")
import roles.clip_fetch as cf
import roles.speaker as sp
args = json.loads({args!r})
status, detail = cf.fetch(args, "clips/", lambda: None)
fmt = []
if status == "ok":
    with open("clips/" + args["name"] + ".wav", "rb") as f:
        fmt = list(sp.wav(f))
print(json.dumps([status, detail, fmt]))
"""


async def test_esp32_and_pi_fetch_their_variant(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto) as http:
        clip = (await http.post("/api/audio/tts", json={"title": "t", "text": "Thông báo khẩn"})).json()
        files = {f["kind"]: f for f in clip["files"]}
        for device in ("spk-esp32", "spk-pi"):
            assert (await http.post("/api/devices", json={"id": device, "kind": device[4:]})).status_code == 201
        library = http.app.state.audio_library  # type: ignore[attr-defined]

        esp32 = files["esp32"]
        token, _ = library.token("spk-esp32", esp32["sha256"])
        name = "c" + esp32["sha256"][:24]
        args = {"name": name, "url": f"{http.base_url}/audio/files/{esp32['sha256']}?t={token}",
                "sha256": esp32["sha256"], "bytes": esp32["bytes"]}
        board = tmp_path / "board"
        board.mkdir()
        (board / "fetch.py").write_text(FETCH.format(slot=str(SLOT), args=json.dumps(args)))
        # in a thread: the fleet answering the download runs on this test's event loop
        done = await asyncio.to_thread(subprocess.run, [str(MICROPYTHON), "-X", "heapsize=64k", "fetch.py"],
                                       cwd=board, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        status, detail, fmt = json.loads(done.stdout.strip().splitlines()[-1])
        assert status == "ok", detail
        rate, bits, channels, data_bytes = fmt
        assert detail == {"bytes": esp32["bytes"], "sha256": esp32["sha256"]}
        assert (rate, bits, channels) == (16_000, 16, 1)
        assert data_bytes == esp32["bytes"] - 44  # a bare RIFF/fmt/data header: nothing for the node to skip
        assert hashlib.sha256((board / "clips" / f"{name}.wav").read_bytes()).hexdigest() == esp32["sha256"]

        # the answer's header as the node reads it (it gives up past 2,048 bytes): the security headers fit
        reader, writer = await asyncio.open_connection(http.base_url.host, http.base_url.port)
        writer.write(f"GET /audio/files/{esp32['sha256']}?t={token} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 200") and len(head) < 1500, len(head)

        pi = files["pi"]
        token, _ = library.token("spk-pi", pi["sha256"])
        cache = ClipCache(tmp_path / "pi-clips", 10 * 1024 * 1024)
        async with httpx.AsyncClient(timeout=10) as client:
            url = f"{http.base_url}/audio/files/{pi['sha256']}?t={token}"
            entry = await cache.fetch(client, "c" + pi["sha256"][:24], url, pi["sha256"], pi["bytes"])
        assert (entry.sha256, entry.size) == (pi["sha256"], pi["bytes"])
        with wave.open(str(cache.verified("c" + pi["sha256"][:24])), "rb") as played:
            assert (played.getframerate(), played.getsampwidth(), played.getnchannels()) == (48_000, 2, 1)
