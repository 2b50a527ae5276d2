# The stream counter when state.json is lost, and the birth's prev, under the real MicroPython:
#   micropython mp_lost_counter.py <slot folder> <scratch folder> <case>    (or "--list")
# ruff: noqa: E402  -- the imports need the slot on sys.path first
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[2])  # the board's filesystem for state.json
# isort: off
import contract
from store import Counters

# isort: on


def expect(got, want):
    assert got == want, "%r != %r" % (got, want)


def fresh():
    for name in ("state.json", "state.json.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass


def restarted():
    # a counter that restarted: between 2^47 and 2^48 - 1, boots from 0
    c = Counters()
    assert (1 << 47) <= c.ses < (1 << 48), c.ses
    expect((c.boots, c.restarted), (0, True))
    return c


def case_a_missing_state_json_restarts_at_a_random_48_bit_value():
    fresh()
    starts = set()
    for _ in range(20):
        fresh()
        starts.add(restarted().ses)
    expect(len(starts), 20)  # random each time, never 0, never the same


def case_a_damaged_or_foreign_state_json_restarts_too():
    for text in ('{"boots": 3, "ses', "[1, 2]", '{"boots": 3}', '{"ses": -1, "boots": 3}', '{"ses": "7"}', "null"):
        with open("state.json", "w") as f:
            f.write(text)
        restarted()


def case_a_kept_counter_counts_on():
    fresh()
    c = restarted()
    first = c.on_boot()
    expect(json.load(open("state.json")), {"boots": 1, "ses": first})
    again = Counters()
    expect(again.restarted, False)
    expect(again.on_boot(), first + 1)
    expect(again.boots, 2)


def case_the_birth_says_where_the_stream_before_ended():
    boot = contract.Stream(1 << 47)
    for _ in range(3):
        boot.stamp({}, None)
    conn = contract.Stream(boot.ses + 1, boot)
    expect(conn.prev, (boot.ses, 3))
    body = contract.birth(conn.ses, None, "0.1.0", [], 1, "power_on", 60, None, conn.prev)
    expect(body["prev"], {"ses": boot.ses, "next_seq": 3})
    expect("prev" in contract.birth(boot.ses, None, "0.1.0", [], 1, "power_on", 60), False)
    later = contract.Stream(conn.ses + 1, conn)  # numbers only: the chain of streams is not kept
    expect(later.prev, (conn.ses, 0))
    expect(isinstance(later.prev, tuple), True)


CASES = {name[5:]: f for name, f in globals().items() if name.startswith("case_")}

if sys.argv[3] == "--list":
    print(" ".join(sorted(CASES)))
else:
    CASES[sys.argv[3]]()
    print("ok", sys.argv[3])
