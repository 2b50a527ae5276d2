# Policies of the firmware that need no broker, under the real MicroPython:
#   micropython mp_units.py <slot folder> <scratch folder> <case>    (or "--list")
# ruff: noqa: E402  -- the imports need the slot on sys.path first
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[2])  # the board's filesystem for files the modules write
# isort: off
import mqtt  # noqa: F401  -- the largest module first: compiling it takes the most heap
import contract
from commands import RECENT, Commands
from desired import Desired
from link import Backoff
from outbox import Outbox
from store import Counters

# isort: on


class Clock:
    def __init__(self, now_ms):
        self.ms = now_ms

    def now_ms(self):
        return self.ms


class Device:
    # What commands and desired state need from the device: the clock, a health period and a
    # place for the messages they emit.
    def __init__(self, now_ms=1795766400000):
        self.hal = Clock(now_ms)
        self.sent = []
        self.period_s = 60
        self.reboot_requested = False
        self.roles = []
        self.boot = None

    def log(self, msg):
        pass

    def emit(self, suffix, body):
        self.sent.append((suffix, body))

    def check_health_period(self, period):
        ok = isinstance(period, int) and not isinstance(period, bool) and 1 <= period <= 86400
        return None if ok else "must be an integer in 1..86400"

    def set_health_period(self, period):
        error = self.check_health_period(period)
        if not error:
            self.period_s = period
        return error


def cmd(cid, name, args=None, exp=1795766500000):
    return json.dumps({"v": 1, "id": cid, "name": name, "args": args or {}, "exp": exp}).encode()


def expect(actual, wanted):
    assert actual == wanted, f"\n got    {actual!r}\n wanted {wanted!r}"


def case_backoff_doubles_with_jitter_up_to_the_cap():
    b = Backoff(1000, 8000)
    caps = [1000, 2000, 4000, 8000, 8000, 8000]
    for cap in caps:
        d = b.next_ms()
        assert cap // 2 <= d <= cap, (d, cap)
    b.reset()
    assert b.next_ms() <= 1000
    spread = set(Backoff(1000, 60000).next_ms() for _ in range(20))
    assert len(spread) > 1, "no jitter"


def case_outbox_drops_oldest_at_the_bound():
    box = Outbox(3)
    for i in range(5):
        box.put(i)
    expect(box.items, [2, 3, 4])
    expect(box.dropped, 2)
    item = box.take()
    box.put(5)
    box.put_back(item)  # full again: the one put back is the oldest, so it is the one dropped
    expect(box.items, [3, 4, 5])
    expect(box.dropped, 3)
    box.take()
    box.put_back(3)
    expect(box.items, [3, 4, 5])


def case_commands_answer_every_command():
    dev = Device()
    c = Commands(dev)
    c.handle(cmd("a", "ping"))
    c.handle(cmd("b", "set_health_period", {"period_s": 5}))
    c.handle(cmd("c", "set_health_period", {"period_s": "soon"}))
    c.handle(cmd("d", "dance"))
    c.handle(cmd("e", "ping", exp=1795766399999))
    c.handle(b'{"v": 1, "id": "f", "name": "ping"}')
    c.handle(b"not json")  # no id to answer to: logged only
    results = [(b["id"], b["status"], b.get("detail")) for s, b in dev.sent if s == "cmd/result"]
    expect(
        results,
        [
            ("a", "ok", {"n": 1}),
            ("b", "ok", {"period_s": 5}),
            ("c", "error", "must be an integer in 1..86400"),
            ("d", "unknown", None),
            ("e", "expired", None),
            ("f", "error", "bad command: bad args"),
        ],
    )
    expect(dev.period_s, 5)


def case_commands_without_a_clock_are_not_expired():
    dev = Device(now_ms=None)
    Commands(dev).handle(cmd("a", "ping", exp=1))
    expect(dev.sent[0][1]["status"], "ok")


def case_duplicate_command_is_answered_not_rerun():
    dev = Device()
    c = Commands(dev)
    c.handle(cmd("a", "ping"))
    c.handle(cmd("a", "ping"))
    expect([b["detail"] for _, b in dev.sent], [{"n": 1}, {"n": 1}])
    expect(c.pings, 1)
    for i in range(RECENT):  # pushes "a" out of the bounded memory
        c.handle(cmd(f"x{i}", "ping"))
    c.handle(cmd("a", "ping"))
    expect(dev.sent[-1][1]["detail"], {"n": RECENT + 2})
    expect(len(c.recent), RECENT)


def case_reboot_is_deferred_to_the_loop():
    dev = Device()
    Commands(dev).handle(cmd("r", "reboot"))
    expect(dev.sent[0][1]["status"], "ok")
    assert dev.reboot_requested


def case_desired_state_is_stored_applied_and_reported():
    dev = Device()
    d = Desired(dev, "d.json")
    d.offer(json.dumps({"v": 1, "version": 3, "doc": {"health_period_s": 7, "lights": [1]}}).encode())
    d.offer(json.dumps({"v": 1, "version": 4, "doc": {"health_period_s": 0}}).encode())
    d.offer(json.dumps({"v": 1, "version": 2, "doc": {}}).encode())
    d.offer(json.dumps({"v": 1, "version": 3, "doc": {}}).encode())  # the same again: reported once
    d.offer(b"")  # retained document cleared
    reports = [(b["version"], b["status"], b.get("error")) for s, b in dev.sent]
    expect(
        reports,
        [
            (3, "applied", None),
            (4, "rejected", "health_period_s: must be an integer in 1..86400"),
            (3, "applied", None),
        ],
    )
    expect(dev.period_s, 7)
    with open("d.json") as f:
        expect(json.load(f), {"version": 3, "doc": {"health_period_s": 7, "lights": [1]}})
    # After a restart: the stored document runs again before any broker is reached.
    dev2 = Device()
    d2 = Desired(dev2, "d.json")
    d2.restore()
    expect(dev2.period_s, 7)
    expect([(b["version"], b["status"]) for _, b in dev2.sent], [(3, "applied")])


def case_counters_number_streams():
    for name in ("state.json", "state.json.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    c = Counters()
    first = c.on_boot()
    expect(first > 1 << 47, True)  # no state.json: a random 48-bit start (tests/firmware/mp/mp_lost_counter.py)
    expect(c.ses_for_connect(), first + 1)
    expect(c.ses_for_connect(), first + 1)  # a failed attempt's number is reused
    c.connected()
    expect(c.ses_for_connect(), first + 2)
    again = Counters()  # after a reboot: never a number used before
    expect(again.on_boot(), first + 3)
    expect(again.boots, 2)


def case_stamps_are_taken_when_made():
    s = contract.Stream(5)
    early = s.stamp({}, None)
    s2 = contract.Stream(6)
    expect((early["ses"], early["seq"]), (5, 0))
    expect((s2.stamp({}, 1)["ses"], s.stamp({}, 1)["seq"]), (6, 1))


CASES = {name[5:]: f for name, f in globals().items() if name.startswith("case_")}

if sys.argv[3] == "--list":
    print(" ".join(sorted(CASES)))
else:
    CASES[sys.argv[3]]()
    print("ok", sys.argv[3])
