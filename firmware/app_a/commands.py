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
        }

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
            try:
                status, detail = handler(cmd["args"])
            except Exception as e:  # a failing handler is an answer, not a crash
                status, detail = "error", repr(e)
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
        # would hand the same reboot to the next boot.
        self.device.reboot_requested = True
        return "ok", None
