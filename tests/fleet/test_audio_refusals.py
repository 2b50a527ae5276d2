"""Every bad upload is refused with its reason, and nothing of it is stored; the speakers'
tokenised downloads refuse what their token does not allow."""

import hashlib
import time
from pathlib import Path

import httpx

from tests.fleet.audio_kit import audio_fleet, ffmpeg, speechlike, tone, upload
from tests.support.mosquitto import Mosquitto

MB = 1024 * 1024


def _stored(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "audio" / "files").rglob("*.wav"))


def _left_in_tmp(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "audio" / "tmp").iterdir())


async def _refused(http: httpx.AsyncClient, path: Path, status: int, *needles: str) -> None:
    response = await upload(http, path)
    assert response.status_code == status, (path.name, response.status_code, response.text)
    detail = response.json()["detail"]
    for needle in needles:
        assert needle in detail, (path.name, detail)


async def test_bad_uploads_are_refused_with_the_reason(tmp_path: Path, mosquitto: Mosquitto) -> None:
    text = tmp_path / "notice.mp3"
    text.write_text("Thông báo: this is text with an .mp3 name, not audio\n" * 20)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(hashlib.sha256(b"seed").digest() * 600)
    long_mp3 = speechlike(tmp_path / "long.mp3", 8, codec=["-c:a", "libmp3lame", "-b:a", "64k"])
    whole_mp3 = speechlike(tmp_path / "whole.mp3", 5, codec=["-c:a", "libmp3lame", "-b:a", "64k"])
    cut_mp3 = tmp_path / "cut.mp3"  # the header (Xing frame count) promises 5 s; the bytes hold about 2
    cut_mp3.write_bytes(whole_mp3.read_bytes()[: whole_mp3.stat().st_size * 4 // 10])
    cut_wav = tmp_path / "cut.wav"  # the RIFF header promises 4 s
    full_wav = tone(tmp_path / "full.wav", 4)
    cut_wav.write_bytes(full_wav.read_bytes()[:200_000])
    short = tone(tmp_path / "short.wav", 0.2)
    silent = tmp_path / "silent.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "3", str(silent))
    flac = tone(tmp_path / "tone.flac", 2)
    video = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=2", "-f", "lavfi", "-i",
           "sine=duration=2", "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(video))
    async with audio_fleet(tmp_path, mosquitto, audio_max_s=6, audio_budget_mb=1, audio_upload_max=MB) as http:
        await _refused(http, text, 422, "not an audio file")
        await _refused(http, empty, 422, "the file is empty")
        await _refused(http, garbage, 422, "not an audio file")
        await _refused(http, long_mp3, 422, "too long: 8 s", "the longest clip is 6 s")
        await _refused(http, cut_mp3, 422, "corrupt audio", "decodes to")
        await _refused(http, cut_wav, 422, "corrupt audio")
        await _refused(http, short, 422, "too short")
        await _refused(http, silent, 422, "silent")
        await _refused(http, flac, 422, "unsupported format", "WAV, MP3, OGG or M4A")
        await _refused(http, video, 422, "holds video")
        assert _stored(tmp_path) == [] and _left_in_tmp(tmp_path) == []

        # over FLEET_AUDIO_UPLOAD_MAX: refused from the declared length, before the body is read
        big = await http.post("/api/audio", content=b"x" * (MB + 1),
                              headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert big.status_code == 413 and "over the limit" in big.json()["detail"]

        async def chunked() -> object:
            yield b"--x\r\n"

        no_length = await http.post("/api/audio", content=chunked(),  # type: ignore[arg-type]
                                    headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert no_length.status_code == 411 and "Content-Length" in no_length.json()["detail"]
        not_form = await http.post("/api/audio", content=full_wav.read_bytes()[:5000],
                                   headers={"Content-Type": "audio/wav"})
        assert not_form.status_code == 400 and "multipart/form-data" in not_form.json()["detail"]

        # the budget (1 MB): a 4 s clip takes 128,044 + 384,044 bytes; a second one does not fit
        first = await upload(http, full_wav)
        assert first.status_code == 201, first.text
        stored = _stored(tmp_path)
        assert len(stored) == 2
        response = await upload(http, tone(tmp_path / "second.wav", 5, hz=600))
        assert response.status_code == 409
        assert response.json()["detail"].startswith("the audio library is full: 0.5 MB used of 1 MB")
        assert "delete clips first" in response.json()["detail"]
        assert _stored(tmp_path) == stored and _left_in_tmp(tmp_path) == []
        # room again after a delete
        assert (await http.delete(f"/api/audio/{first.json()['id']}")).status_code == 204
        assert (await upload(http, tmp_path / "second.wav")).status_code == 201


async def test_speaker_downloads_need_their_token(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto, audio_token_ttl_s=60) as http:
        clip = (await http.post("/api/audio/tts", json={"title": "t", "text": "Xin chào các bạn"})).json()
        esp32 = next(f for f in clip["files"] if f["kind"] == "esp32")
        pi = next(f for f in clip["files"] if f["kind"] == "pi")
        for device in ("spk-1", "spk-2"):
            assert (await http.post("/api/devices", json={"id": device, "kind": "esp32"})).status_code == 201
        library = http.app.state.audio_library  # type: ignore[attr-defined]
        token, expires = library.token("spk-1", esp32["sha256"])
        assert expires - time.time() <= 60
        anonymous = httpx.AsyncClient(base_url=str(http.base_url))
        async with anonymous:
            got = await anonymous.get(f"/audio/files/{esp32['sha256']}", params={"t": token})
            assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
            assert hashlib.sha256(got.content).hexdigest() == esp32["sha256"]
            assert len(got.content) == esp32["bytes"]

            async def refused(sha256: str, token: str | None, status: int, needle: str) -> None:
                answer = await anonymous.get(f"/audio/files/{sha256}", params={"t": token} if token else None)
                assert answer.status_code == status and needle in answer.json()["detail"], answer.text

            await refused(esp32["sha256"], None, 403, "needs its token")
            await refused(pi["sha256"], token, 403, "for another file")
            await refused(esp32["sha256"], token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), 403, "not valid")
            await refused(esp32["sha256"], "a~b~c", 403, "malformed")
            await refused(esp32["sha256"], library.token("spk-1", esp32["sha256"], time.time() - 61)[0], 403,
                          "expired")
            await refused(esp32["sha256"], library.token("nobody", esp32["sha256"])[0], 403, "not registered")
            assert (await http.post("/api/devices/spk-2/decommission")).status_code == 200
            await refused(esp32["sha256"], library.token("spk-2", esp32["sha256"])[0], 403, "decommissioned")
            gone = "0" * 64
            await refused(gone, library.token("spk-1", gone)[0], 404, "no such clip file")
            # the token is the only credential: a logged-in person's bearer token does not replace it
            answer = await http.get(f"/audio/files/{esp32['sha256']}")
            assert answer.status_code == 403
