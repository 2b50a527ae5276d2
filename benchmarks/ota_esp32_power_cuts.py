"""Power cuts during ESP32 updates (issue 11): the MicroPython process of a board (unix port,
-X heapsize=64k, sim role) is killed with SIGKILL at random moments of an update from 0.1.0 to
0.2.0, and started again, ≥ 100 times in all; after its cuts each board runs on by itself (started
again whenever it resets itself, as an ESP32 does) until it settles. Every board must end running
a verified version (0.1.0 or 0.2.0), never bricked, never in safe mode. Prints the counts and
where the cuts fell; exits 1 if a board was bricked or in safe mode.

Real parts: the firmware of this checkout, a release of it at 0.2.0 built and signed with the
signer's tool (provisioning/release.py), a private Mosquitto, the files served over HTTP with
Range at about --rate bytes a second (so cuts land in downloads too).

    .venv/bin/python benchmarks/ota_esp32_power_cuts.py [--cuts 100] [--seed N] [--window-s 1.5] [--rate 50000]

A board gets up to 2 to 5 cuts, each at a random moment up to --window-s after a start (or a
restart it made itself), and none once its update is over (the offer's outcome in ota.json, no
trial in bootstate.json). Without cuts an update takes about 3 s here at 50 KB/s (the offer, the
update boot, a 1.2 s download, the new slot's boot and its commit), so the cuts fall across all
of it; the phase of each cut is the last thing its boot printed.
"""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.firmware import ota_support as ota
from tests.firmware.support import HostBoard
from tests.support.http_files import FileServer
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--window-s", type=float, default=1.5)
    parser.add_argument("--rate", type=int, default=50_000, help="download speed, bytes/s")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="ota-esp32-cuts-") as scratch:
        work = Path(scratch)
        release = ota.build(work, "0.2.0").signed("A")
        size = sum(len(data) for data in release.files.values())
        print(f"seed {seed}; release {release.name}: {len(release.files)} files, {size} bytes, served at "
              f"{args.rate} bytes/s")
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        server = FileServer(release.files, rate=args.rate)
        results = []
        started = time.monotonic()
        try:
            left, n = args.cuts, 0
            while left > 0:
                n += 1
                cuts = min(left, rng.randint(2, 5))
                device = f"esp-cut-{os.getpid()}-{n}"
                board = HostBoard(work / device, device, broker.port, roles=["sim"])
                probe = Probe(broker.port, f"ioc/v1/d/{device}/#")
                try:
                    result = ota.power_cut_run(board, probe, server, release, cuts, rng, window_s=args.window_s)
                finally:
                    probe.close()
                results.append(result)
                left -= result["cuts"]
                print(f"  board {n}: {result['cuts']} cuts ({'; '.join(result['phases'])}) -> fw {result['fw']}"
                      f"{', SAFE MODE' if result['safe'] else ''}", flush=True)
        finally:
            server.close()
            broker.kill()
    print(ota.cut_summary(results))
    print(f"took {time.monotonic() - started:.0f} s")
    bad = [r for r in results if r["fw"] not in ("0.1.0", "0.2.0") or r["safe"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
