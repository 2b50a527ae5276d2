# Commands from the fleet (`cmd`): one handler per name, an answer for every command, and the
# results of the last RECENT commands so a redelivered command is answered, not run again.
import contract

RECENT = 16  # bounded memory; the oldest result is forgotten first


class Commands:
    def __init__(self, device):
        self.device = device
        self.recent = []  # [(id, status, detail)], oldest first
        self.pings = 0
        self.handlers = {
            "ping": self.ping,
            "set_health_period": self.set_health_period,
            "reboot": self.reboot,
            "set_time": self.set_time,
        }
        self.current = None  # the id of the command being handled, for handlers that answer later

    def handle(self, payload):
        dev = self.device
        try:
            cmd = contract.parse_cmd(payload)
        except ValueError as e:
            cid = contract.command_id(payload)
            dev.log("bad command: %s" % e)
            if cid is not None:
                self._answer(cid, "error", "bad command: %s" % e)
            return
        cid = cmd["id"]
        for done in self.recent:
            if done[0] == cid:
                dev.log("command %s again; same answer" % cid)
                dev.emit("cmd/result", contract.cmd_result(cid, done[1], done[2]))
                return
        now = dev.hal.now_ms()
        handler = self.handlers.get(cmd["name"])
        if now is not None and cmd["exp"] < now:
            status, detail = "expired", None
        elif handler is None:
            status, detail = "unknown", None
        else:
            self.current = cid
            try:
                status, detail = handler(cmd["args"])
            except Exception as e:  # a failing handler is an answer, not a crash
                status, detail = "error", repr(e)
            if status is None:
                return  # the handler answers later, through finish()
        self._answer(cid, status, detail)

    def finish(self, cid, status, detail=None):
        self._answer(cid, status, detail)

    def _answer(self, cid, status, detail):
        if len(self.recent) >= RECENT:
            self.recent.pop(0)
        self.recent.append((cid, status, detail))
        self.device.emit("cmd/result", contract.cmd_result(cid, status, detail))

    def ping(self, args):
        self.pings += 1
        return "ok", {"n": self.pings}

    def set_health_period(self, args):
        period = args.get("period_s")
        error = self.device.set_health_period(period)
        if error:
            return "error", error
        return "ok", {"period_s": period}

    def reboot(self, args):
        # Deferred: the loop first sends this answer and acknowledges the command, or the broker
        # would hand the same reboot to the next boot. {"safe_mode": false} leaves safe mode: the
        # failed-boot count is cleared, so the next boot runs the roles again.
        dev = self.device
        if args.get("safe_mode") is False and dev.boot is not None:
            dev.boot.mark_good()
        dev.reboot_requested = True
        return "ok", None

    def set_time(self, args):
        # The fleet's clock, for a device that cannot reach NTP: {"unix_ms": n}
        ms = args.get("unix_ms")
        if not isinstance(ms, int) or isinstance(ms, bool) or ms < 1577836800000:
            return "error", "unix_ms must be an integer after 2020"
        return "ok", {"skew_ms": self.device.set_time(ms)}
