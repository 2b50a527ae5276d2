"""The audio library's pipeline on test audio made by ffmpeg: for each source format, the time to
probe, normalise and transcode it for both speaker kinds, and each variant's integrated loudness
and true peak as ffmpeg's ebur128 measures the written file (target -23 LUFS, EBU R128).

    .venv/bin/python benchmarks/audio_library.py [--seconds 30]
"""

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

from fleet.broadcast.audio_tools import FORMATS, measure_loudness, normalise, probe

TARGET = -23.0
TIMEOUT_S = 600.0


def make_sources(folder: Path, seconds: float) -> list[Path]:
    def ffmpeg(*args: str) -> None:
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)

    speech = (f"anoisesrc=color=pink:amplitude=0.3:duration={seconds}:sample_rate=44100",
              "volume='0.05+0.95*gt(sin(2*PI*4*t),0)*gt(sin(2*PI*0.5*t),-0.3)':eval=frame,"
              "lowpass=f=4000,highpass=f=150")
    made = []
    for name, source, filters, codec in (
        ("tone-loud.wav", f"sine=frequency=440:duration={seconds}", "volume=15dB", []),
        ("speech.mp3", speech[0], speech[1], ["-c:a", "libmp3lame", "-b:a", "96k"]),
        ("tone-quiet.ogg", f"sine=frequency=1000:duration={seconds}", "volume=-35dB", ["-c:a", "libvorbis"]),
        ("speech.m4a", speech[0], speech[1], ["-c:a", "aac", "-b:a", "96k"]),
    ):
        path = folder / name
        ffmpeg("-f", "lavfi", "-i", source, "-af", filters, "-ac", "2", *codec, str(path))
        made.append(path)
    return made


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each test source")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'source':<16} {'in':>7} {'kind':<6} {'rate':>6} {'LUFS':>7} {'dBTP':>6} {'off target':>10} "
              f"{'bytes':>9} {'s to make':>9}")
        worst = 0.0
        for source in make_sources(folder, args.seconds):
            source_lufs = (await measure_loudness(source, TIMEOUT_S)).integrated_lufs
            began = time.perf_counter()
            probed = await probe(source, TIMEOUT_S)
            variants = await asyncio.gather(*(normalise(source, folder / f"{source.stem}-{fmt.kind}.wav", fmt,
                                                        probed, TARGET, TIMEOUT_S) for fmt in FORMATS))
            took = time.perf_counter() - began
            for variant in variants:
                measured = await measure_loudness(variant.path, TIMEOUT_S)  # measured again, on the file
                off = measured.integrated_lufs - TARGET
                worst = max(worst, abs(off))
                print(f"{source.name:<16} {source_lufs:>7.1f} {variant.kind:<6} {variant.sample_rate:>6} "
                      f"{measured.integrated_lufs:>7.1f} {measured.true_peak_dbtp:>6.1f} {off:>+10.1f} "
                      f"{variant.path.stat().st_size:>9} {took:>9.2f}")
        print(f"largest distance from {TARGET} LUFS: {worst:.1f} LU ({args.seconds:g} s sources; "
              "both kinds made in parallel, 's to make' includes the probe and the check)")


if __name__ == "__main__":
    asyncio.run(main())
