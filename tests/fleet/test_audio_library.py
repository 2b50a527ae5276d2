"""The audio library on a real fleet: uploads of each format made by ffmpeg, transcoded for each
speaker kind and normalised to EBU R128 (checked here with ffmpeg's ebur128), text-to-speech in
Vietnamese, list/get/delete, usage, and who may do what."""

import asyncio
import hashlib
from pathlib import Path

from fleet.auth.roles import Role
from tests.fleet.audio_kit import TARGET_LUFS, audio_fleet, loudness, speechlike, tone, upload, wav_format
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto

FORMATS = {"esp32": (2, 16_000, 1), "pi": (2, 48_000, 1)}  # 16-bit PCM, rate, mono


async def test_each_format_becomes_both_variants_at_the_target_loudness(tmp_path: Path, mosquitto: Mosquitto) -> None:
    sources = [
        tone(tmp_path / "tone.wav", 4, hz=440, volume_db=15),  # about -9 LUFS: brought down
        speechlike(tmp_path / "speech.mp3", 5, codec=["-c:a", "libmp3lame", "-b:a", "96k"]),
        tone(tmp_path / "quiet.ogg", 4, hz=1000, volume_db=-35, codec=["-c:a", "libvorbis"]),  # quiet: brought up
        speechlike(tmp_path / "speech.m4a", 4, codec=["-c:a", "aac", "-b:a", "96k"]),
    ]
    async with audio_fleet(tmp_path, mosquitto) as http:
        for source in sources:
            response = await upload(http, source, f"test {source.name}")
            assert response.status_code == 201, response.text
            clip = response.json()
            assert clip["source_format"] == {"wav": "WAV", "mp3": "MP3", "ogg": "OGG", "m4a": "M4A"}[source.suffix[1:]]
            assert abs(clip["duration_ms"] - (5000 if "speech.mp3" in source.name else
                                              4000)) < 150, clip["duration_ms"]
            assert {f["kind"] for f in clip["files"]} == {"esp32", "pi"}
            for variant in clip["files"]:
                answer = await http.get(f"/api/audio/{clip['id']}/file", params={"kind": variant["kind"]})
                assert answer.status_code == 200
                assert answer.headers["content-type"] == "audio/wav"
                body = answer.content
                assert hashlib.sha256(body).hexdigest() == variant["sha256"] and len(body) == variant["bytes"]
                stored = tmp_path / f"{clip['id']}-{variant['kind']}.wav"
                stored.write_bytes(body)
                assert wav_format(stored) == FORMATS[variant["kind"]]
                assert variant["sample_rate"] == FORMATS[variant["kind"]][1]
                measured = await asyncio.to_thread(loudness, stored)
                assert abs(measured - TARGET_LUFS) <= 1.0, (source.name, variant["kind"], measured)
                assert abs(variant["loudness_lufs"] - measured) <= 0.2
                assert variant["true_peak_dbtp"] <= -1.0
        listed = await http.get("/api/audio")
        assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "4"
        assert [c["title"] for c in listed.json()] == [f"test {s.name}" for s in reversed(sources)]
        usage = (await http.get("/api/audio/usage")).json()
        assert usage["clips"] == 4
        assert usage["used_bytes"] == sum(f["bytes"] for c in listed.json() for f in c["files"])


async def test_text_to_speech_in_vietnamese(tmp_path: Path, mosquitto: Mosquitto) -> None:
    text = "Thông báo của Ủy ban nhân dân phường Tân Phú: ngày mai cắt điện từ bảy giờ đến mười một giờ."
    async with audio_fleet(tmp_path, mosquitto) as http:
        response = await http.post("/api/audio/tts", json={"title": "cắt điện", "text": text, "voice": "vi"})
        assert response.status_code == 201, response.text
        clip = response.json()
        assert clip["source"] == "tts" and clip["voice"] == "vi" and clip["text"] == text
        assert clip["duration_ms"] > 3000  # a sentence, not a beep
        pi = next(f for f in clip["files"] if f["kind"] == "pi")
        path = tmp_path / "tts.wav"
        path.write_bytes((await http.get(f"/api/audio/{clip['id']}/file")).content)
        assert abs(loudness(path) - TARGET_LUFS) <= 1.0
        assert hashlib.sha256(path.read_bytes()).hexdigest() == pi["sha256"]
        again = await http.post("/api/audio/tts", json={"title": "again", "text": text, "voice": "vi"})
        assert again.status_code == 409 and f"clip {clip['id']}" in again.json()["detail"]
        english = await http.post("/api/audio/tts", json={"title": "en", "text": text, "voice": "en"})
        assert english.status_code == 201
        assert english.json()["files"][0]["sha256"] != clip["files"][0]["sha256"]
        for bad, why in (({"title": "x", "text": "   ", "voice": "vi"}, "empty"),
                         ({"title": "x", "text": "a\x07b", "voice": "vi"}, "control characters")):
            refused = await http.post("/api/audio/tts", json=bad)
            assert refused.status_code == 422 and why in refused.json()["detail"]
        assert (await http.post("/api/audio/tts", json={"title": "x", "text": "a", "voice": "fr"})).status_code == 422


async def test_delete_and_roles(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto) as http:
        source = tone(tmp_path / "a.wav", 2)
        made = (await upload(http, source)).json()
        again = await upload(http, source, "again")
        assert again.status_code == 409
        assert again.json()["detail"] == f"this audio is already in the library as clip {made['id']}"
        files = [tmp_path / "audio" / "files" / f["sha256"][:2] / f"{f['sha256']}.wav" for f in made["files"]]
        assert all(f.is_file() for f in files)
        operator = {"Authorization": f"Bearer {await token_for(http, Role.IOC_OPERATOR)}"}
        reader = {"Authorization": f"Bearer {await token_for(http, Role.READ_ONLY)}"}
        ops = {"Authorization": f"Bearer {await token_for(http, Role.OPS)}"}
        assert (await http.get(f"/api/audio/{made['id']}", headers=reader)).status_code == 200
        assert (await http.get(f"/api/audio/{made['id']}/file", headers=reader)).status_code == 200
        for headers in (reader, ops):
            refused = await http.post("/api/audio/tts", json={"title": "t", "text": "xin chào"}, headers=headers)
            assert refused.status_code == 403 and "broadcast" in refused.json()["detail"]
            assert (await http.delete(f"/api/audio/{made['id']}", headers=headers)).status_code == 403
            with (tmp_path / "a.wav").open("rb") as file:
                assert (await http.post("/api/audio", files={"file": ("a.wav", file)}, data={"title": "t"},
                                        headers=headers)).status_code == 403
        spoken = await http.post("/api/audio/tts", json={"title": "t", "text": "xin chào"}, headers=operator)
        assert spoken.status_code == 201
        assert (await http.delete(f"/api/audio/{made['id']}", headers=operator)).status_code == 204
        assert not any(f.exists() for f in files)
        assert (await http.get(f"/api/audio/{made['id']}")).status_code == 404
        assert (await http.delete(f"/api/audio/{made['id']}")).status_code == 404
        audit = (await http.get("/api/audit", params={"limit": 100})).json()
        actions = [entry["action"] for entry in (audit if isinstance(audit, list) else audit["entries"])]
        assert {"audio.upload", "audio.tts", "audio.delete"} <= set(actions)
