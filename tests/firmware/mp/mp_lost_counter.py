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
    assert got == want, f"{got!r} != {want!r}"


def state():
    with open("state.json") as f:
        return json.load(f)


def restarted(boots=0):
    # no usable counter: a random value from 2^47 to 2^48 - 1 (the boot count from the file if it has one)
    c = Counters()
    assert (1 << 47) <= c.ses < (1 << 48), c.ses
    expect(c.boots, boots)
    return c


def case_a_missing_state_json_restarts_at_a_random_48_bit_value():
    starts = set()
    for _ in range(20):
        if "state.json" in os.listdir():
            os.remove("state.json")
        starts.add(restarted().ses)
    expect(len(starts), 20)  # random each time: never 0, never the same
    c = restarted()
    first = c.on_boot()
    expect(state(), {"boots": 1, "ses": first})
    expect(Counters().on_boot(), first + 1)  # kept from then on


def case_a_damaged_state_json_restarts_too():
    cases = (('{"boots": 3, "ses', 0), ("", 0), ("null", 0), ('{"boots": 3}', 3), ('{"ses": 0, "boots": 3}', 3))
    for text, boots in cases:
        with open("state.json", "w") as f:
            f.write(text)
        restarted(boots)


def case_a_kept_counter_counts_on():
    with open("state.json", "w") as f:
        f.write('{"boots": 4, "ses": 41}')
    c = Counters()
    expect(c.on_boot(), 42)
    expect(c.ses_for_connect(), 43)
    expect(state(), {"boots": 5, "ses": 43})


def case_the_birth_says_where_the_stream_before_ended():
    boot = contract.Stream(1 << 47)
    expect(contract.Stream(boot.ses + 1, boot).prev, None)  # it stamped nothing: nothing to say
    for _ in range(3):
        boot.stamp({}, None)
    conn = contract.Stream(boot.ses + 1, boot)
    expect(conn.prev, (boot.ses, 3))
    body = contract.birth(conn.ses, None, "0.1.0", [], 1, "power_on", 60, None, conn.prev)
    expect(body["prev"], {"ses": boot.ses, "next_seq": 3})
    expect("prev" in contract.birth(boot.ses, None, "0.1.0", [], 1, "power_on", 60), False)
    conn.stamp({}, None)
    later = contract.Stream(conn.ses + 1, conn)  # numbers only: the chain of streams is not kept
    expect(later.prev, (conn.ses, 1))


CASES = {name[5:]: f for name, f in globals().items() if name.startswith("case_")}

if sys.argv[3] == "--list":
    print(" ".join(sorted(CASES)))
else:
    CASES[sys.argv[3]]()
    print("ok", sys.argv[3])
