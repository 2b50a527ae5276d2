# Checks of light programs and overrides (format: light_program.py). Imported only while a
# document or a command is checked, then dropped, so its code does not stay in the heap. It
# imports nothing of the role: a check has to fit next to the message being checked.
MAX_RULES = 16
MAX_STEPS = 12  # a rule's
MAX_OVERRIDES = 8  # in the document


def _hhmm(s):
    if not isinstance(s, str) or len(s) != 5 or s[2] != ":":
        return None
    try:
        h, m = int(s[:2]), int(s[3:])
    except ValueError:
        return None
    return h * 60 + m if 0 <= h < 24 and 0 <= m < 60 else None


def _level(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 100


def check_override(o):
    if not isinstance(o, dict) or not _level(o.get("level")):
        return "override level must be 0..100"
    for k in ("from", "until"):
        if k in o and (not isinstance(o[k], int) or isinstance(o[k], bool)):
            return "override %s must be Unix ms" % k
    if "until" not in o:
        return "override needs until"
    return None


def check(p):
    # An error message, or None when the program is runnable as a whole.
    if not isinstance(p, dict):
        return "must be an object"
    for k in ("lat", "lon"):
        if k in p and not isinstance(p[k], (int, float)):
            return k + " must be a number"
    if "tz_min" in p and not isinstance(p["tz_min"], int):
        return "tz_min must be an integer"
    for k in ("default", "failsafe"):
        if k in p and not _level(p[k]):
            return k + " must be 0..100"
    rules = p.get("rules", [])
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        return "rules: a list of at most %d" % MAX_RULES
    for r in rules:
        if not isinstance(r, dict) or not isinstance(r.get("steps"), list):
            return "a rule needs steps"
        if len(r["steps"]) > MAX_STEPS:
            return "at most %d steps a rule" % MAX_STEPS
        for d in r.get("days", ()):
            if not isinstance(d, int) or not 0 <= d <= 6:
                return "days are 0 (Monday) .. 6"
        for d in r.get("dates", ()):
            if not isinstance(d, str) or len(d) not in (5, 10):
                return "dates are YYYY-MM-DD or MM-DD"
        for s in r["steps"]:
            if not isinstance(s, dict) or not _level(s.get("level")):
                return "a step needs a level 0..100"
            if "sun" in s:
                if s["sun"] not in ("rise", "set") or not isinstance(s.get("off", 0), int):
                    return "sun is rise or set, off whole minutes"
            elif _hhmm(s.get("at")) is None:
                return "a step needs at (HH:MM) or sun"
    ovr = p.get("overrides", [])
    if not isinstance(ovr, list) or len(ovr) > MAX_OVERRIDES:
        return "overrides: a list of at most %d" % MAX_OVERRIDES
    for o in ovr:
        e = check_override(o)
        if e:
            return e
    return None


