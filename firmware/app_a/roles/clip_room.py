# speaker.clip_fetch when it arrives: the command checked, room on flash made for the clip within
# the speaker's clip_budget_kb, and the download queued (the speaker's loop runs it). Imported only
# for that moment (its code does not stay in the heap).
import os

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
FETCH_MAX = 4  # downloads waiting; at the bound a new one is answered error "busy"
FOLDER = "clips/"


def take(sp, args):
    # The command's answer now ("error", reason), or (None, None): queued, answered when done
    name, size = args.get("name"), args.get("bytes")
    if not isinstance(name, str) or not 0 < len(name) <= 32 or name.strip(NAME_CHARS):
        return "error", "name: 1..32 of a-z 0-9 _ -"
    if not isinstance(size, int) or not isinstance(args.get("url"), str) \
            or not isinstance(args.get("sha256"), str):
        return "error", "needs url, sha256 and bytes"
    if len(sp.fetches) >= FETCH_MAX:
        return "error", "busy: %d downloads waiting" % FETCH_MAX
    status, detail = room(sp, args)
    if status:
        return status, detail
    sp.fetches.append((sp.device.commands.current, args))
    return None, None


def room(sp, args):
    # (None, None) when the clip fits in the budget with the downloads already waiting, after
    # removing clips nobody needs if that makes room (else nothing is removed); else the "over
    # budget" answer. Needed: named by the schedule, playing or waiting to play, waiting to be
    # downloaded, or downloaded less than config clip_keep_s (3600) s ago: an emergency command
    # may name a clip fetched just before it; after a boot, every clip is kept for that long of
    # uptime. A .tmp file is a download a reset cut short (downloads run in the loop, one at a
    # time, never while a command is handled): removed.
    up = sp.device.meter.up_ms
    keep_ms = getattr(sp.device.cfg, "clip_keep_s", 3600) * 1000
    for n in [n for n in sp.fetched if up - sp.fetched[n] >= keep_ms]:
        del sp.fetched[n]
    keep = [b["clip"] for b in sp.schedule] + [b["clip"] for b, _ in sp.queue] + list(sp.fetched)
    used = 0
    for _, a in sp.fetches:  # waiting downloads: their room is taken
        keep.append(a["name"])
        used += a["bytes"]
    if sp.play:
        keep.append(sp.play[0]["clip"])
    mine = args["name"] + ".wav"
    spare = []
    for entry in os.ilistdir(FOLDER[:-1]):
        n = entry[0]
        if n.endswith(".tmp"):
            os.remove(FOLDER + n)
        elif n != mine:
            size = os.stat(FOLDER + n)[6]
            used += size
            if n.endswith(".wav") and n[:-4] not in keep and up >= keep_ms:
                spare.append((n, size))
    budget = sp.budget
    over = used + args["bytes"] - budget
    if over > 0 and sum(s for _, s in spare) >= over:
        for n, size in spare:
            if over <= 0:
                break
            os.remove(FOLDER + n)
            sp.device.log("speaker: clip %s removed for room" % n)
            over -= size
            used -= size
    if over > 0:
        return "error", "over budget: %d + %d > %d bytes" % (used, args["bytes"], budget)
    return None, None
