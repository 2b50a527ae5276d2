"""Generated device traffic for the ingest fuzz test: valid streams, replays, late arrivals and the
nasty messages of issue 8 (deep nesting, NaN and infinities, lone surrogates, NUL, oversized,
garbage, wrong versions, bad topics), plus random mutations of valid messages.

`Expectation` is the independent bookkeeping: what the fleet must conclude about each message,
from the contract's parser and its stream rule, so the test can compare counts exactly.
"""

import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

from contract import ContractError, is_fleet_publish, parse_upstream
from fleet.ingest.presence import Presence
from fleet.ingest.sequence import StreamState, Verdict

STORED_TABLES = {"health": "health", "telemetry": "telemetry", "event": "event"}
RESERVED = ("child_birth", "child_death", "child_health")
TEXTS = ["a", "motion", "Đồng Xoài", "🚦 giao thông", 'quote " and \\ backslash', "[{[{", "\\ud800 as text",
         "tab\there", "x" * 200, "ngã tư", "0", "null"]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e400"]
SURROGATES = ["\\ud800", "\\udbff", "\\udc00", "\\udfff", "a\\ud83d", "\\ude00b"]


class Expectation:
    """What the ingest must make of each message, in order."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.presence: dict[str, Presence] = {}  # its epoch keys the streams
        self.streams: dict[tuple[str, int, int], StreamState] = {}

    def feed(self, topic: str, payload: bytes) -> None:
        self.counts["sent"] += 1
        if is_fleet_publish(topic):
            self.counts["skipped:own_publish"] += 1
            return
        if not payload and topic.endswith(("/birth", "/death")):
            self.counts["skipped:retained_clear"] += 1
            return
        try:
            msg = parse_upstream(topic, payload)
        except ContractError as err:
            self.counts[f"rejected:{err.reason}"] += 1
            return
        presence = self.presence.setdefault(msg.device_id, Presence())
        if msg.seq is None:
            self.counts["presence"] += 1
            if msg.kind == "death":
                presence.death(msg.ses)
                return
            counted = presence.birth(msg.ses, retained=False, body=msg.body)
            # a birth of the current epoch describes its stream (docs/protocol.md, "Streams")
            if (counted or msg.ses == presence.session) and msg.body.get("next_seq"):
                self._stream(msg.device_id, presence.epoch, msg.ses).start_at(msg.body["next_seq"])
            return
        stream = self._stream(msg.device_id, presence.epoch, msg.ses)
        if stream.accept(msg.seq) is Verdict.DUPLICATE:
            self.counts["duplicates"] += 1
        elif msg.kind in RESERVED:
            self.counts["reserved"] += 1
        elif msg.kind == "ota_progress":
            self.counts["ota"] += 1
        else:
            self.counts["stored"] += 1
            if msg.kind in STORED_TABLES:
                self.counts[f"rows:{STORED_TABLES[msg.kind]}"] += 1
        stream.changed.clear()

    def _stream(self, device_id: str, epoch: int, ses: int) -> StreamState:
        stream = self.streams.setdefault((device_id, epoch, ses), StreamState())
        stream.changed.clear()
        return stream


class Traffic:
    """An endless, repeatable mix of messages from `devices` devices (seeded)."""

    def __init__(self, seed: int, devices: int = 40) -> None:
        self.rng = random.Random(seed)
        self.devices = [f"fz-{seed % 1000:03d}-{i:03d}" for i in range(devices)]
        self.ses = {d: self.rng.randrange(1, 5) for d in self.devices}
        self.next_seq = {d: 0 for d in self.devices}
        self.recent: list[tuple[str, bytes]] = []  # sent valid messages, for replays (bounded)
        self.held: list[tuple[str, bytes]] = []  # skipped numbers, sent late (bounded)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        kinds = [(self.valid, 40), (self.replay, 8), (self.late, 4), (self.presence, 4), (self.cleared, 1),
                 (self.own_publish, 1), (self.nasty, 22), (self.mutated, 20)]
        makers = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        while True:
            yield self.rng.choices(makers, weights)[0]()

    # valid messages -------------------------------------------------------------------------
    def _text(self) -> str:
        return self.rng.choice(TEXTS)

    def _number(self) -> float | int:
        return self.rng.choice([0, -1, 2**53 - 1, 1.5, -273.15, 1e308, 5e-324, self.rng.uniform(-1e6, 1e6)])

    def _body(self, kind: str) -> dict[str, Any]:
        r = self.rng
        if kind == "health":
            return {"up_s": r.randrange(10**6), "fw": r.choice(["0.1.0", "1.2.3-rc1"]), "cpu_pct": self._number(),
                    "queue": r.randrange(100), "roles": {"sim": {"readings": r.randrange(9)}}}
        if kind == "telemetry":
            return {"role": r.choice(["sim", "sensor", "light"]),
                    "r": {f"k{i}": self._number() for i in range(r.randrange(1, 6))}}
        if kind == "event":
            body = {"id": self._text(), "type": r.choice(["motion", "alarm", "playback"]),
                    "phase": r.choice(["start", "update", "end", "once"]),
                    "category": r.choice(["security", "traffic_safety", "other"]),
                    "data": {self._text(): self._text(), "boxes": [[1, 2, 3, 4]]}}
            if r.random() < 0.3:
                body["snapshot"] = {"ref": "snap/x.jpg", "sha256": "a" * 64, "bytes": r.randrange(10**6)}
            return body
        if kind == "cmd/result":
            return {"id": f"c-{r.randrange(10**6)}", "status": r.choice(["ok", "error", "expired", "unknown"]),
                    "detail": r.choice([{"x": 1}, self._text()])}
        if kind == "state/reported":
            return {"version": r.randrange(2**31), "status": r.choice(["applied", "rejected"]), "error": "why"}
        if kind == "ota/progress":
            return {"release": "0.2.0", "status": "downloading", "pct": r.randrange(101)}
        return {"kind": "ip_camera"} if kind.endswith("birth") else {"reason": "lost"} if kind.endswith("death") else {}

    def _numbered(self) -> tuple[str, dict[str, Any]]:
        device = self.rng.choice(self.devices)
        suffix = self.rng.choice(["health", "telemetry", "event", "cmd/result", "state/reported", "health",
                                  "telemetry", "ota/progress", "child/cam-1/health", "child/cam-1/birth",
                                  "child/cam-2/death"])
        seq = self.next_seq[device]
        self.next_seq[device] += 1
        body = {"v": 1, "ses": self.ses[device], "seq": seq, "ts": self.rng.choice([None, 1795766400000 + seq]),
                **self._body(suffix.split("/")[-1] if suffix.startswith("child/") else suffix)}
        return f"ioc/v1/d/{device}/{suffix}", body

    def valid(self) -> tuple[str, bytes]:
        topic, body = self._numbered()
        message = (topic, json.dumps(body).encode())
        if self.rng.random() < 0.05 and len(self.held) < 200:
            self.held.append(message)  # skipped now: a gap, closed when it is sent later
            topic, body = self._numbered()
            message = (topic, json.dumps(body).encode())
        self.recent.append(message)
        if len(self.recent) > 500:
            self.recent.pop(0)
        return message

    def replay(self) -> tuple[str, bytes]:
        return self.rng.choice(self.recent) if self.recent else self.valid()

    def late(self) -> tuple[str, bytes]:
        return self.held.pop(self.rng.randrange(len(self.held))) if self.held else self.valid()

    def presence(self) -> tuple[str, bytes]:
        device = self.rng.choice(self.devices)
        if self.rng.random() < 0.2:  # a new connection: a new stream
            self.ses[device] += 1
            self.next_seq[device] = 0
        ses = self.ses[device] + self.rng.choice([0, 0, 0, -1, 1])
        if self.rng.random() < 0.5:
            body = {"v": 1, "ses": ses, "ts": None, "kind": "pi", "fw": "0.1.0", "roles": ["sim"],
                    "boot": {"n": 1, "reason": "start"}, "period_s": 30, "next_seq": self.next_seq[device]}
            return f"ioc/v1/d/{device}/birth", json.dumps(body).encode()
        body = {"v": 1, "ses": ses, "ts": None, "reason": self.rng.choice(["lost", "shutdown"])}
        return f"ioc/v1/d/{device}/death", json.dumps(body).encode()

    def cleared(self) -> tuple[str, bytes]:
        return f"ioc/v1/d/{self.rng.choice(self.devices)}/{self.rng.choice(['birth', 'death'])}", b""

    def own_publish(self) -> tuple[str, bytes]:
        suffix = self.rng.choice(["cmd", "state/desired", "ota/offer"])
        return f"ioc/v1/d/{self.rng.choice(self.devices)}/{suffix}", b'{"v":1}'

    # nasty messages ---------------------------------------------------------------------------
    def nasty(self) -> tuple[str, bytes]:
        r = self.rng
        device = r.choice(self.devices)
        topic = f"ioc/v1/d/{device}/{r.choice(['health', 'telemetry', 'event'])}"
        head = f'"v":1,"ses":{self.ses[device]},"seq":{r.randrange(10**6)},"ts":null'
        choice = r.randrange(14)
        if choice == 0:  # nested deeper than the contract allows, up to what 8 KB can hold
            depth = r.choice([17, 18, 64, 1000, 2000, 4000])
            return topic, b'{"v":1,"d":' + b"[" * depth + b"]" * depth + b"}"
        if choice == 1:
            depth = r.choice([17, 500, 1500])
            return topic, b'{"a":' * depth + b"1" + b"}" * depth
        if choice == 2:  # a number JSON cannot carry
            return (f"ioc/v1/d/{device}/telemetry",
                    f'{{{head},"role":"sim","r":{{"x":{r.choice(NON_FINITE)}}}}}'.encode())
        if choice == 3:
            return (f"ioc/v1/d/{device}/health",
                    f'{{{head},"up_s":1,"fw":"0.1.0","roles":{{"sim":{{"x":{r.choice(NON_FINITE)}}}}}}}'.encode())
        if choice == 4:  # a lone surrogate, escaped, in some text
            bad = r.choice(SURROGATES)
            field = r.choice(['"id":"{s}","type":"t"', '"id":"e","type":"{s}"', '"id":"e","type":"t","x":"{s}"'])
            return (f"ioc/v1/d/{device}/event", (f'{{{head},{field.format(s=bad)},"phase":"once",'
                                                 f'"category":"other","data":{{"{bad}":1}}}}').encode())
        if choice == 5:  # a surrogate as raw bytes: not UTF-8
            return topic, f'{{{head},"fw":"'.encode() + b"\xed\xa0\x80" + b'"}'
        if choice == 6:
            return (f"ioc/v1/d/{device}/event",
                    f'{{{head},"id":"a\\u0000","type":"t","phase":"once","category":"other","data":{{}}}}'.encode())
        if choice == 7:  # oversized
            return topic, json.dumps({"v": 1, "pad": "x" * r.randrange(8193, 30000)}).encode()
        if choice == 8:  # garbage
            return topic, r.randbytes(r.randrange(0, 300))
        if choice == 9:
            return topic, r.choice([b"[]", b"1", b'"x"', b"null", b"{", b"\xef\xbb\xbf{}", b"{}",
                                    json.dumps({"v": 1}).encode("utf-16"), b"9" * 5000])
        if choice == 10:
            v = r.choice(["2", "0", '"1"', "true", "1.0", "null", "-1"])
            return topic, f'{{"v":{v},"ses":1,"seq":1,"ts":null,"up_s":1,"fw":"x"}}'.encode()
        if choice == 11:  # topics the contract does not know
            bad = r.choice([f"ioc/v1/d/{device}/selfie", "ioc/v1/d/UPPER/health", f"ioc/v1/d/{device}",
                            f"ioc/v1/d/{device}/child/Bad_Id/health", f"ioc/v1/d/{device}/child/cam-1/telemetry",
                            f"ioc/v1/d/{device}/" + "x" * 250, "ioc/v1/d/ünïcode/health",
                            f"ioc/v1/d/{device}/health/x"])
            return bad, b'{"v":1}'
        if choice == 12:  # huge integers
            return topic, f'{{{head},"up_s":{"9" * r.choice([17, 30, 4000])},"fw":"x"}}'.encode()
        # fields of the wrong type
        role = r.choice(["1", "null", "[]", '"' + "r" * 33 + '"', '"Sim"'])
        return f"ioc/v1/d/{device}/telemetry", f'{{{head},"role":{role},"r":{{"x":1}}}}'.encode()

    def mutated(self) -> tuple[str, bytes]:
        """A valid message with one field replaced by something random; the contract decides."""
        r = self.rng
        topic, body = self._numbered()
        self.next_seq[topic.split("/")[3]] -= 1  # not numbered for real: it may well be refused
        pool: list[Any] = [None, True, -1, 0, 2**53, 2**31, 1.5, "", "x", "x" * 300, [], {}, [[[]]], {"a": {"b": {}}},
                           "\U0001f6a6", r.randrange(-10, 10), "🚦" * 70]
        key = r.choice([*body.keys(), "extra", "next_seq"])
        if r.random() < 0.2:
            body.pop(key, None)
        else:
            body[key] = r.choice(pool)
        return topic, json.dumps(body).encode()
