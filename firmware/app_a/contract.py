# The wire contract (docs/protocol.md) on the device: topics, upstream builders, downstream
# parsers. Pure code: no socket, no hardware, so it runs the same on the host and the board.
import json

V = 1
ROOT = "ioc/v1/d/"
UPSTREAM_MAX = 8192
CMD_ID_MAX = 64


def topic(device_id, suffix):
    return ROOT + device_id + "/" + suffix


class Stream:
    # One value of the persistent `ses` counter and the `seq` numbers issued in it. Messages are
    # stamped when they are made, so a buffered message keeps its stamp when it is sent later.
    def __init__(self, ses, before=None):
        self.ses = ses
        self.seq = 0
        # where the stream before this one ended, for the birth's `prev`: numbers, not the object,
        # so streams do not chain up in the heap; none when it stamped nothing (nothing to lose)
        self.prev = (before.ses, before.seq) if before and before.seq else None

    def stamp(self, body, ts):
        body["v"] = V
        body["ses"] = self.ses
        body["seq"] = self.seq
        body["ts"] = ts
        self.seq += 1
        return body


def encode(body):
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > UPSTREAM_MAX:
        raise ValueError("upstream message of %d bytes" % len(data))
    return data


def birth(ses, ts, fw, roles, boots, reason, period_s, hw=None, prev=None):
    body = {"v": V, "ses": ses, "ts": ts, "kind": "esp32", "fw": fw, "roles": roles,
            "boot": {"n": boots, "reason": reason}, "period_s": period_s}
    if hw:
        body["hw"] = hw
    if prev:  # (ses, next seq) of the stream before this connection's
        body["prev"] = {"ses": prev[0], "next_seq": prev[1]}
    return body


def death(ses, ts, reason):
    return {"v": V, "ses": ses, "ts": ts, "reason": reason}


def health(up_s, fw, heap_free, heap_min, heap_max_block, rssi, reset, queue, dropped,
           reconnects, loop_ms):
    body = {"up_s": up_s, "fw": fw, "heap_free": heap_free, "heap_min": heap_min,
            "reset": reset, "queue": queue, "dropped": dropped, "reconnects": reconnects,
            "loop_ms": loop_ms}
    # Only what the device knows: no RSSI without a link, no largest block where the port hides it.
    if heap_max_block is not None:
        body["heap_max_block"] = heap_max_block
    if rssi is not None:
        body["rssi"] = rssi
    return body


def telemetry(role, readings):
    # The contract allows finite numbers only (MicroPython's json writes NaN as a bare nan, which
    # the fleet refuses whole): a reading that is not finite is left out; None if none is left.
    r = {k: v for k, v in readings.items() if not isinstance(v, float) or v - v == 0}
    return {"role": role, "r": r} if r else None


def event(eid, etype, phase, category, data):
    return {"id": eid, "type": etype, "phase": phase, "category": category, "data": data}


def cmd_result(cmd_id, status, detail=None):
    body = {"id": cmd_id, "status": status}
    if detail is not None:
        body["detail"] = detail
    return body


def state_reported(version, status, error=None):
    body = {"version": version, "status": status}
    if error:
        body["error"] = error
    return body


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _v1_object(payload):
    body = json.loads(payload)
    if not isinstance(body, dict) or body.get("v") != V:
        raise ValueError("not a v1 object")
    return body


def command_id(payload):
    # The id of a command that may be malformed otherwise, so it can still be answered.
    try:
        cid = json.loads(payload).get("id")
    except (ValueError, AttributeError):
        return None
    if isinstance(cid, str) and 0 < len(cid) <= CMD_ID_MAX:
        return cid
    return None


def parse_cmd(payload):
    body = _v1_object(payload)
    cid = body.get("id")
    if not (isinstance(cid, str) and 0 < len(cid) <= CMD_ID_MAX):
        raise ValueError("bad id")
    if not isinstance(body.get("name"), str) or not body["name"]:
        raise ValueError("bad name")
    if not isinstance(body.get("args"), dict):
        raise ValueError("bad args")
    if not _is_int(body.get("exp")):
        raise ValueError("bad exp")
    return body


def parse_desired(payload):
    body = _v1_object(payload)
    if not _is_int(body.get("version")) or not isinstance(body.get("doc"), dict):
        raise ValueError("bad desired-state document")
    return body
