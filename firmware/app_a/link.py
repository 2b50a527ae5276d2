# The device's way to the broker: wifi (through the HAL), then an MQTT session with a will,
# retried with exponential backoff and jitter while the loop keeps running. Over TLS when given
# a context (ssl): made once at start-up and kept, so a reconnect neither reads ca.der again nor
# leaves a hole of a context's size in the heap.
import random
import time

import contract
from mqtt import MQTTClient

WIFI_POLL_MS = 1000  # how often a device without wifi looks at it again


class Backoff:
    # Delays double from min_ms to max_ms; each is drawn from [d/2, d] ("equal jitter") so a
    # street of lights that lost the broker together does not come back in lock step.
    def __init__(self, min_ms, max_ms):
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.failures = 0

    def next_ms(self):
        d = min(self.max_ms, self.min_ms << min(self.failures, 16))
        self.failures += 1
        half = d // 2
        return half + half * random.getrandbits(16) // 65535

    def reset(self):
        self.failures = 0


class Link:
    def __init__(self, hal, cfg, counters, on_message, log, ssl=None, on_big=None):
        self.hal = hal
        self.cfg = cfg
        self.ssl = ssl
        self.counters = counters
        self.on_message = on_message
        self.on_big = on_big
        self.log = log
        self.backoff = Backoff(cfg.backoff_min_s * 1000, cfg.backoff_max_s * 1000)
        self.client = None
        self.ses = None  # the stream of the current connection
        self.connects = 0
        self.reconnects = 0
        self._next_try = time.ticks_ms()
        self._up_since = 0
        self.broker = 0  # index in cfg.brokers of the next attempt; moves on after a failure or loss

    @property
    def up(self):
        return self.client is not None

    def topic(self, suffix):
        return contract.topic(self.cfg.device_id, suffix)

    def due(self, now):
        return self.client is None and time.ticks_diff(now, self._next_try) >= 0

    def ms_to_next_try(self, now):
        return max(0, time.ticks_diff(self._next_try, now))

    def try_connect(self, now, new_stream, birth):
        # One attempt. new_stream(ses) opens the connection's stream before anything can be
        # stamped in it; birth(ses) builds the birth certificate, sent once the subscriptions
        # are in place, so a birth also says "ready for commands". Returns the new ses, or None
        # (the next attempt is then scheduled by the backoff).
        if not self.hal.wifi_up():
            # The radio retries by itself; look again soon, without growing the broker backoff.
            self.hal.wifi_start()
            self._next_try = time.ticks_add(now, WIFI_POLL_MS)
            return None
        cfg = self.cfg
        ses = self.counters.ses_for_connect()
        host, port = cfg.brokers[self.broker % len(cfg.brokers)]
        client = MQTTClient(cfg.device_id, host, port, cfg.username,
                            cfg.password, keepalive=cfg.keepalive_s, clean_session=False,
                            ssl=self.ssl)
        client.set_will(self.topic("death"), contract.encode(contract.death(ses, None, "lost")))
        client.on_message = self.on_message
        client.on_big = self.on_big
        try:
            client.connect()
            self.counters.connected()
            new_stream(ses)
            client.subscribe(self.topic("cmd"), 1)
            client.subscribe(self.topic("state/desired"), 1)
            client.subscribe(self.topic("ota/offer"), 1)
            client.publish(self.topic("birth"), contract.encode(birth(ses)), qos=1, retain=True)
        except OSError as e:
            client.close()
            self._retry(now, "connect failed: %r" % e)
            return None
        self.client = client
        self.ses = ses
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self._up_since = now
        self.log("connected ses=%d to %s:%d" % (ses, host, port))
        return ses

    def publish(self, suffix, payload, retain=False):
        self.client.publish(self.topic(suffix), payload, qos=1, retain=retain)

    def lost(self, err):
        if self.client is None:
            return
        self.client.close()
        self.client = None
        now = time.ticks_ms()
        # Only a connection that stayed up a while earns a fast retry; one the broker drops
        # straight away keeps backing off.
        if time.ticks_diff(now, self._up_since) >= self.backoff.max_ms:
            self.backoff.reset()
        self._retry(now, "link lost: %r" % err)

    def _retry(self, now, why):
        self.broker = (self.broker + 1) % len(self.cfg.brokers)  # the next node of a cluster, if any
        delay = self.backoff.next_ms()
        self._next_try = time.ticks_add(now, delay)
        self.log("%s; retry in %d ms" % (why, delay))

    def close(self, death_payload):
        # Clean stop: the death certificate, then DISCONNECT (which makes the broker drop the will).
        if self.client is None:
            return
        try:
            self.client.publish(self.topic("death"), death_payload, qos=1, retain=True)
            self.client.disconnect()
        except OSError:
            self.client.close()
        self.client = None
