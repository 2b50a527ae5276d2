# The update boot (docs/firmware.md, "Updates"): app.py runs this instead of the device when an
# offer waits in ota_offer.json (the running firmware restarted for it) or an update was cut off
# (ota_job.txt: a power cut). No roles, commands or desired state: their heap goes to the offer's
# checks and the download. It connects as the device (birth "mode": "update"), reports on
# ota/progress in its own numbered stream, takes the offer (ota_offer.py) or resumes the job
# (ota_fetch.py), and restarts: into the new slot on trial, the other slot (rollback), or the
# same firmware (refused, failed). Never a failed boot: whatever goes wrong here gives the update
# up, reported, and the board restarts into the version it ran.
import gc
import sys
import time

import store
from version import FW

_RETRY_MS = 10000  # a broker that did not answer is tried again this often (for a report)
_WIFI_WAIT_S = 30  # the update boot waits this long for wifi, then goes on (and fails its download)


class Updater:
    # What ota.py, ota_offer.py and ota_fetch.py ask of a device, without the device.
    def __init__(self, boot, cfg, hal, ssl):
        self.boot = boot
        self.cfg = cfg
        self.hal = hal
        self.ssl = ssl
        self.link = self  # ota_fetch.py reads dev.link.ssl
        self.ota = None
        self.reboot_requested = False
        self.offer_again = False
        self.offer = None  # (id, release, digest) of the offer at hand, once known
        self.counters = store.Counters()
        self.ses = self.counters.on_boot()
        # contract.py (5 KB on this port) is loaded, and the stream made, once the offer's checks
        # are over: till then the reports are held unstamped (speak())
        self.stream = None
        self.reset_cause = hal.reset_cause()
        self.client = None
        self._next_try = time.ticks_ms()
        self.quiet = True
        self.held = []

    def speak(self):
        # The offer's checks are over (their modules dropped): what they reported goes out.
        self.quiet = False
        held = self.held
        self.held = None
        for suffix, body in held:
            self._send(suffix, body)

    def log(self, msg):
        print("fw:", msg)

    def feed(self):
        self.hal.wdt_feed()

    def topic(self, suffix):
        return __import__("contract").topic(self.cfg.device_id, suffix)

    def connect(self):
        if time.ticks_diff(time.ticks_ms(), self._next_try) < 0:
            return
        self._next_try = time.ticks_add(time.ticks_ms(), _RETRY_MS)
        contract = __import__("contract")
        cfg = self.cfg
        ses = self.counters.ses_for_connect()
        c = __import__("mqtt").MQTTClient(cfg.device_id, cfg.broker_host, cfg.broker_port, cfg.username, cfg.password,
                       keepalive=cfg.keepalive_s, clean_session=False, ssl=self.ssl)
        # The session's commands are not taken here: unacknowledged, the broker hands them to
        # the device at its next connect.
        c.ack = False
        c.set_will(self.topic("death"), contract.encode(contract.death(ses, None, "lost")))
        try:
            c.connect()
            self.counters.connected()
            self.stream = contract.Stream(ses, self.stream)
            body = contract.birth(ses, self.hal.now_ms(), FW, [], self.counters.boots,
                                  self.reset_cause, cfg.health_period_s, self.hal.hw, self.stream.prev)
            body["mode"] = "update"
            c.publish(self.topic("birth"), contract.encode(body), qos=1, retain=True)
        except OSError as e:
            c.close()
            self.log("update boot: no broker: %r" % e)
            return
        self.client = c
        self.log("update boot: connected ses=%d" % ses)

    def emit(self, suffix, body):
        # Sent at once, or lost: the offer's outcome is kept in ota.json and answered again when
        # the offer is delivered again (every connect of the device). While the offer is checked
        # (quiet), held in a short list: the MQTT client's code is not loaded yet.
        if self.quiet:
            self.held.append((suffix, body))
        else:
            self._send(suffix, body)

    def _send(self, suffix, body):
        contract = __import__("contract")
        if self.stream is None:
            self.stream = contract.Stream(self.ses)
        if self.client is None:
            self.connect()
        self.stream.stamp(body, self.hal.now_ms())
        if self.client is not None:
            try:
                self.client.publish(self.topic(suffix), contract.encode(body), qos=1)
            except OSError as e:
                self.client.close()
                self.client = None
                self.log("update boot: link lost: %r" % e)

    def close(self):
        if self.client is not None:
            contract = __import__("contract")
            death = contract.death(self.stream.ses, self.hal.now_ms(), "shutdown")
            try:
                self.client.publish(self.topic("death"), contract.encode(death), qos=1, retain=True)
                self.client.disconnect()
            except OSError:
                self.client.close()
            self.client = None


def _drop():
    for name in ("ota_offer", "ota_check", "ota_verify", "ota_json"):
        sys.modules.pop(name, None)
    gc.collect()


def _update(dev):
    import ota

    if ota.size(ota.OFFER) >= 0:
        # each stage's code leaves the heap before the next: the offer read, its checks, the job
        o = __import__("ota_offer").take(dev)
        _drop()
        job = o and __import__("ota_check").check(dev, o)
        o = None
        _drop()
        dev.log("update boot: offer checked; heap free %d" % gc.mem_free())
        dev.speak()
        if job:
            dev.ota = __import__("ota_fetch").Job(dev, *job)
    else:
        dev.speak()
        dev.ota = __import__("ota_fetch").resume(dev)
    low = gc.mem_free()
    while dev.ota is not None:
        if not dev.ota.step():
            dev.ota = None
        dev.feed()
        gc.collect()
        low = min(low, gc.mem_free())
    dev.log("update boot: least heap free after a step %d (heap %d)" % (low, gc.mem_free() + gc.mem_alloc()))


def _give_up(dev, err):
    # An error the checks did not foresee (out of heap, the flash): the update is over, reported
    # and remembered by the offer's digest, so the offer is not taken again and again.
    import ota

    s = ota.load()
    job = s.pop("job", None)
    offer = (job["id"], job["release"], job["sha"]) if job else dev.offer
    for name in (ota.OFFER, ota.JOB, ota.META):
        ota.remove(name)
    for e in s["recent"]:
        if not job and offer and e[0] == offer[0] and e[2] in ota.FINAL:
            offer = None  # its outcome is recorded already (the error came while reporting it)
    if offer:
        ota.failed(dev, s, offer[0], offer[1], "install", "update boot: %r" % err, offer[2])
    else:
        ota.save(s)


def run(boot):
    import config
    import hal

    try:
        cfg = config.load()
        ssl = None if cfg.insecure_plaintext else __import__("trust").context()
    except config.ConfigError as e:
        print("fw: config error:", e)
        sys.exit(2)
    board = hal.load(cfg)
    for name in ("config", "hal", "trust"):
        sys.modules.pop(name, None)
    gc.collect()
    dev = Updater(boot, cfg, board, ssl)
    board.wdt_start(cfg.wdt_s * 1000)
    dev.log("update boot: fw %s device %s" % (FW, cfg.device_id))
    # After a reset the radio is off (ESP32) and, after a power cut, the clock unknown: the
    # download needs the one, the offer's expiry the other (NTP; the RTC survives a reset).
    board.wifi_start()
    for _ in range(_WIFI_WAIT_S * 10):
        if board.wifi_up():
            break
        board.wdt_feed()
        board.sleep_ms(100)
    if board.now_ms() is None and board.wifi_up():
        board.ntp_sync(cfg.ntp_host)
    try:
        try:
            _update(dev)
        except Exception as e:  # SystemExit and KeyboardInterrupt pass
            sys.print_exception(e)
            dev.ota = None
            _drop()
            _give_up(dev, e)
            if dev.quiet:
                dev.speak()
        dev.close()
    except Exception as e:  # even the report: the board goes back to its version all the same
        sys.print_exception(e)
    boot.end()  # not judged, not counted (a no-op after a switch, which ended the boot already)
    dev.log("update boot: restarting")
    board.reset()
