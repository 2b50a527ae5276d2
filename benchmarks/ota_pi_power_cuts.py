"""Power cuts during Pi updates (issue 11): the agent's process group (the agent, and pip while it
makes the venv) is killed with SIGKILL at random moments across whole updates, ≥ 100 times; every
round must end with the device running a verified version, old or new. Prints the counts.

Real parts: releases of the agent at two versions built from this checkout and signed
(tests/edge/ota_support.py), a venv per version, the real launcher run again after every exit as
systemd's Restart=always would, a private Mosquitto, downloads over HTTP with Range.

    .venv/bin/python benchmarks/ota_pi_power_cuts.py [--cuts 100] [--seed N] [--window-s 8] [--rate BYTES/S]

First one update without a cut is timed (offer -> confirmed, and each step by the `ts` of its
progress message), which is what --window-s should cover. `--cuts 0 --rate 0`: only that, with
the download at full speed.
"""

import argparse
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.support, tests.edge

from tests.edge.ota_support import BASE, PATCH, PiRig, back_to_base, build_kit, offer, power_cuts, settle
from tests.support.mosquitto import Mosquitto


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--window-s", type=float, default=8.0, help="cuts fall up to this long after the offer "
                        "or the previous cut")
    parser.add_argument("--rate", type=float, default=1_500_000, help="download speed, bytes/s")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="ota-pi-cuts-") as scratch:
        work = Path(scratch)
        started = time.monotonic()
        kit = build_kit(work / "kit")
        print(f"built and signed {BASE} and {PATCH} ({kit.releases[PATCH].artifact.stat().st_size} bytes each) "
              f"in {time.monotonic() - started:.0f} s", flush=True)
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        pi = PiRig(work / "pi", kit, broker.port).start()
        try:
            pi.server.rate = args.rate or None
            pi.server.add(kit.releases[PATCH].data)
            t0 = time.monotonic()
            pi.publish_offer(offer(kit, kit.releases[PATCH], pi.server.url, name="pi-uncut"))
            if settle(pi, "pi-uncut", 120) != PATCH:
                print("the update without a cut did not end on the new version", file=sys.stderr)
                return 1
            uncut = time.monotonic() - t0
            speed = f"{args.rate / 1e6:.1f} MB/s" if args.rate else "full speed"
            print(f"an update without a cut: offer -> confirmed and the new agent healthy in {uncut:.1f} s "
                  f"(download at {speed})", flush=True)
            steps = [(p["status"], p["ts"]) for p in pi.progress() if p["release"] == "pi-uncut"]
            firsts = [(status, ts) for i, (status, ts) in enumerate(steps) if i == 0 or steps[i - 1][0] != status]
            print("  " + ", ".join(f"{a} -> {b}: {(tb - ta) / 1000:.1f} s"
                                   for (a, ta), (b, tb) in itertools.pairwise(firsts)), flush=True)
            back_to_base(pi, kit, 0)
            report = power_cuts(pi, kit, args.cuts, random.Random(seed), window_s=args.window_s,
                                on_round=lambda r: print(f"  {r.line()}", flush=True))
        finally:
            pi.close()
            broker.kill()
    print(f"seed {seed}: cuts {report.cuts}, rounds {report.rounds}, ended old {report.ended_old}, "
          f"ended new {report.ended_new}, broken {report.broken} (must be 0), failed updates {report.failed}, "
          f"{report.seconds:.0f} s")
    for note in report.notes:
        print(note)
    return 0 if report.broken == 0 and report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
