# Desired state (`state/desired`): a versioned document the device stores on flash and runs
# from while offline. Known keys are checked all together before any is applied; unknown keys
# are kept for later firmware (light programs, broadcast schedules).
import contract
import store

PATH = "desired.json"


class Desired:
    def __init__(self, device, path=PATH):
        self.device = device
        self.path = path
        self.version = -1  # nothing stored yet
        self.doc = None
        self.reported = False

    def restore(self):
        # At boot: run the stored document without waiting for the broker.
        saved = store.read_json(self.path)
        if not isinstance(saved, dict) or not isinstance(saved.get("doc"), dict):
            return
        error = self._apply(saved["doc"])
        if error:
            self.device.log("stored desired state v%r not applied: %s" % (saved.get("version"), error))
            return
        self.version = saved["version"]
        self.doc = saved["doc"]
        self._report(self.version, "applied")

    def offer(self, payload):
        if not len(payload):
            return  # the retained document was cleared; keep running the stored one
        try:
            body = contract.parse_desired(payload)
        except ValueError as e:
            self.device.log("bad desired state: %s" % e)
            return
        version = body["version"]
        if version < self.version:
            self._report(self.version, "applied")  # the fleet is behind: say what runs here
        elif version == self.version:
            if not self.reported:
                self._report(version, "applied")
        else:
            error = self._apply(body["doc"])
            if error:
                self._report(version, "rejected", error)
                return
            store.write_json(self.path, {"version": version, "doc": body["doc"]})
            self.version = version
            self.doc = body["doc"]
            self._report(version, "applied")

    def _apply(self, doc):
        # Every known key is checked before any is applied: a document runs whole or not at all.
        dev = self.device
        keys = [("health_period_s", dev.check_health_period, dev.set_health_period)]
        for role in dev.roles:
            if getattr(role, "key", None):  # a role's own part of the document: "light", ...
                keys.append((role.key, role.check, role.apply))
        for key, check, _ in keys:
            if key in doc:
                error = check(doc[key])
                if error:
                    return key + ": " + error
        for key, _, apply in keys:
            if key in doc:
                apply(doc[key])
        return None

    def _report(self, version, status, error=None):
        # marked reported only once queued: a report lost to a short heap is made again when the
        # document is offered again
        self.device.emit("state/reported", contract.state_reported(version, status, error))
        self.reported = True
