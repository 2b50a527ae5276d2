"""ffprobe, ffmpeg and espeak-ng as the audio library uses them. No framework, no database.

Every run has a time limit; a program that is missing or runs over it is an `AudioUnavailable`
(the fleet's problem, 503), a file that is not usable audio an `AudioRefused` (the caller's, 422).
The formats the speakers play are `FORMATS` (docs/broadcasts.md, "Formats the speakers play").
"""

import asyncio
import contextlib
import json
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_DURATION_S = 0.5  # EBU R128's integrated loudness is measured over 400 ms blocks
TRUE_PEAK_DBTP = -2.0
LOUDNESS_RANGE_LU = 11.0
# container names as ffprobe gives them: WAV, MP3, OGG, MP4/M4A
ACCEPTED_FORMATS = {"wav": "WAV", "mp3": "MP3", "ogg": "OGG", "mov,mp4,m4a,3gp,3g2,mj2": "M4A"}
# a decoded length this much shorter than the container declares is a cut file
TRUNCATION_TOLERANCE = (0.9, 0.25)  # (fraction, seconds)
STDERR_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class SpeakerFormat:
    kind: str
    sample_rate: int
    channels: int = 1  # PCM signed 16-bit little-endian WAV for both kinds


FORMATS = (SpeakerFormat("esp32", 16_000), SpeakerFormat("pi", 48_000))


class AudioError(Exception):
    """Base of the library's errors; `status` is the HTTP status it becomes at the boundary."""

    status = 500


class AudioRefused(AudioError):
    """The file or the text cannot become a clip: the message says why (never repeating the input)."""

    status = 422


class AudioUnavailable(AudioError):
    """The fleet cannot process audio now: a program missing, too slow, or the library busy."""

    status = 503


@dataclass(frozen=True, slots=True)
class Probe:
    format_name: str  # ffprobe's, e.g. "mp3"
    label: str  # WAV, MP3, OGG, M4A
    duration_s: float
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float


@dataclass(frozen=True, slots=True)
class Variant:
    kind: str
    path: Path
    sample_rate: int
    duration_ms: int
    loudness: Loudness


async def run(argv: list[str], timeout_s: float, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """Run a program: (exit status, stdout, the tail of stderr). AudioUnavailable if missing or too slow."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError as err:
        raise AudioUnavailable(f"{argv[0]} is not installed on the fleet's machine") from err
    try:
        async with asyncio.timeout(timeout_s):
            out, err_bytes = await process.communicate(stdin)
    except TimeoutError:
        process.kill()
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        raise AudioUnavailable(f"{argv[0]} took longer than {timeout_s:g} s") from None
    except asyncio.CancelledError:
        process.kill()
        raise
    assert process.returncode is not None
    return process.returncode, out, err_bytes[-STDERR_MAX:].decode(errors="replace")


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = lines[-1] if lines else "no message"
    return text[:160]


async def probe(path: Path, timeout_s: float) -> Probe:
    """What the file is, or AudioRefused: not a media file, no audio, a video, another format."""
    code, out, err = await run(
        ["ffprobe", "-v", "error", "-show_entries",
         "format=format_name,duration:stream=codec_type,codec_name,sample_rate,channels,duration"
         ":stream_disposition=attached_pic", "-of", "json", str(path)], timeout_s)
    if code != 0:
        raise AudioRefused(f"not an audio file: ffprobe cannot read it ({_last_line(err)})")
    try:
        found: dict[str, Any] = json.loads(out)
    except ValueError as parse_err:
        raise AudioRefused("not an audio file: ffprobe gave no description of it") from parse_err
    fmt = found.get("format") or {}
    format_name = str(fmt.get("format_name", ""))
    streams = found.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video"
             and not (s.get("disposition") or {}).get("attached_pic")]
    if not audio:
        raise AudioRefused("not an audio file: it has no audio stream")
    if format_name not in ACCEPTED_FORMATS:
        raise AudioRefused(f"unsupported format {format_name[:40]!r}: upload WAV, MP3, OGG or M4A")
    if video:
        raise AudioRefused("the file holds video: upload the sound alone (WAV, MP3, OGG or M4A)")
    stream = audio[0]
    duration = _number(fmt.get("duration")) or _number(stream.get("duration"))
    if duration is None:
        raise AudioRefused("corrupt audio: its length cannot be read")
    return Probe(format_name, ACCEPTED_FORMATS[format_name], duration, str(stream.get("codec_name", "")),
                 int(_number(stream.get("sample_rate")) or 0), int(stream.get("channels") or 0))


def _number(value: object) -> float | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def check_duration(duration_s: float, max_s: float) -> None:
    if duration_s < MIN_DURATION_S:
        raise AudioRefused(f"too short: {duration_s:.2f} s; a clip needs at least {MIN_DURATION_S} s "
                           "(its loudness cannot be measured)")
    if duration_s > max_s:
        raise AudioRefused(f"too long: {duration_s:.0f} s; the longest clip is {max_s:g} s (FLEET_AUDIO_MAX_S)")


_LOUDNORM_JSON = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.S)
_TIME = re.compile(r"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _shaping(fmt: SpeakerFormat) -> str:
    # downmix and resample before measuring: the variant's loudness is what is measured and set
    return f"aformat=sample_fmts=fltp:sample_rates={fmt.sample_rate}:channel_layouts=mono"


def _loudnorm(target_lufs: float) -> str:
    return f"loudnorm=I={target_lufs:g}:TP={TRUE_PEAK_DBTP:g}:LRA={LOUDNESS_RANGE_LU:g}"


async def normalise(source: Path, out: Path, fmt: SpeakerFormat, probed: Probe, target_lufs: float,
                    timeout_s: float) -> Variant:
    """Two-pass loudnorm into the kind's WAV format, then the result measured with ebur128."""
    measure = [
        "ffmpeg", "-hide_banner", "-nostdin", "-xerror", "-i", str(source), "-vn", "-sn", "-dn",
        "-af", f"{_shaping(fmt)},{_loudnorm(target_lufs)}:print_format=json", "-f", "null", "-"]
    code, _, err = await run(measure, timeout_s)
    if code != 0:
        raise AudioRefused(f"corrupt audio: {_last_line(err)}")
    decoded = _decoded_seconds(err)
    fraction, slack = TRUNCATION_TOLERANCE
    if decoded is not None and decoded < probed.duration_s * fraction - slack:
        raise AudioRefused(f"corrupt audio: it decodes to {decoded:.2f} s of the {probed.duration_s:.2f} s "
                           "its header declares (a cut or damaged file)")
    match = _LOUDNORM_JSON.search(err)
    if match is None:
        raise AudioRefused("corrupt audio: no loudness could be measured")
    measured = json.loads(match.group(0))
    if _number(measured.get("input_i")) is None:  # "-inf": silence
        raise AudioRefused("the audio is silent: there is nothing to normalise")
    second = (f"{_loudnorm(target_lufs)}:measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
              f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
              f":offset={measured['target_offset']}:linear=true")
    apply = [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-xerror", "-i", str(source), "-vn", "-sn", "-dn",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
        "-af", f"{_shaping(fmt)},{second},aresample={fmt.sample_rate}",
        "-ar", str(fmt.sample_rate), "-ac", str(fmt.channels), "-c:a", "pcm_s16le", "-f", "wav", str(out)]
    code, _, err = await run(apply, timeout_s)
    if code != 0:
        raise AudioRefused(f"corrupt audio: {_last_line(err)}")
    loudness = await measure_loudness(out, timeout_s)
    with wave.open(str(out), "rb") as result:
        frames, rate = result.getnframes(), result.getframerate()
    return Variant(fmt.kind, out, rate, round(frames * 1000 / rate), loudness)


def _decoded_seconds(stderr: str) -> float | None:
    found = _TIME.findall(stderr)
    if not found:
        return None
    hours, minutes, seconds = found[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


_INTEGRATED = re.compile(r"I:\s+(-?\d+(?:\.\d+)?|-inf) LUFS")
_PEAK = re.compile(r"Peak:\s+(-?\d+(?:\.\d+)?|-inf) dBFS")


async def measure_loudness(path: Path, timeout_s: float) -> Loudness:
    """Integrated loudness (LUFS) and true peak (dBTP) by ffmpeg's ebur128 filter (EBU R128)."""
    code, _, err = await run(["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-i", str(path),
                              "-af", "ebur128=peak=true", "-f", "null", "-"], timeout_s)
    integrated, peak = _INTEGRATED.findall(err), _PEAK.findall(err)
    if code != 0 or not integrated or not peak:
        raise AudioRefused(f"the loudness of the result could not be measured: {_last_line(err)}")
    return Loudness(float(integrated[-1]), float(peak[-1]))


TTS_VOICES = {"vi": "vi", "en": "en"}


async def speak(text: str, voice: str, out: Path, timeout_s: float) -> None:
    """espeak-ng's WAV of the text; the text goes in on standard input, never as an argument."""
    code, _, err = await run(["espeak-ng", "-v", TTS_VOICES[voice], "--stdin", "-w", str(out)], timeout_s,
                             stdin=text.encode())
    made = await asyncio.to_thread(lambda: out.stat().st_size if out.exists() else 0)
    if code != 0 or made <= 44:
        raise AudioRefused(f"text-to-speech made no audio: {_last_line(err)}")
