# config.json, checked once at start. Unknown keys are kept (a HAL or a role may read them).
import json

DEFAULTS = {
    "broker_port": None,  # 8883 (MQTT over TLS), or 1883 with insecure_plaintext
    # The broker and the fleet are spoken to over TLS, checked against ca.der (trust.py). Only
    # this flag, set by the operator for a lab network, lets the board send its password and
    # enrollment token readable on the wire.
    "insecure_plaintext": False,
    "username": None,
    "password": None,
    "wifi_ssid": None,
    "wifi_password": None,
    "health_period_s": 60,
    "keepalive_s": 30,
    "backoff_min_s": 1,
    "backoff_max_s": 60,
    "buffer_max": 32,
    "roles": [],
    "telemetry_period_s": 60,
    "wdt_s": 30,
    "ntp_host": "pool.ntp.org",
    "boot_good_s": 60,  # a boot whose roles ran this long without failing is good (docs/firmware.md)
    "safe_retry_s": 600,  # safe mode tries the slot again after this long, doubling per retry
    "ota_trial_s": 300,  # a new version must pass its health gate within this much uptime (ota.py)
    "class": "esp32",  # the device class a release must name (docs/ota.md)
}
# name -> (lowest, highest) for the integer settings
RANGES = {
    "broker_port": (1, 65535),
    "health_period_s": (1, 86400),
    "keepalive_s": (2, 3600),
    "backoff_min_s": (1, 3600),
    "backoff_max_s": (1, 3600),
    "buffer_max": (1, 256),
    "telemetry_period_s": (1, 86400),
    "wdt_s": (2, 3600),
    "boot_good_s": (1, 3600),
    "safe_retry_s": (1, 21600),  # x 16 stays within ticks_diff's reach (2^29 ms)
    "ota_trial_s": (1, 3600),
}
ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


class ConfigError(ValueError):
    pass


def valid_device_id(s):
    if not isinstance(s, str) or not 2 <= len(s) <= 63 or s[0] == "-":
        return False
    for c in s:
        if c not in ID_CHARS:
            return False
    return True


class Config:
    # Settings as attributes. No methods: a method would keep this module's globals (only
    # start-up needs them) alive in the heap.
    pass


def load(path="config.json"):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError(path + ": missing")
    except ValueError:
        raise ConfigError(path + ": not valid JSON")
    if not isinstance(raw, dict):
        raise ConfigError(path + ": not a JSON object")
    values = dict(DEFAULTS)
    values.update(raw)
    if not valid_device_id(values.get("device_id")):
        raise ConfigError(path + ": device_id must match [a-z0-9][a-z0-9-]{1,62}")
    if not isinstance(values.get("broker_host"), str) or not values["broker_host"]:
        raise ConfigError(path + ": broker_host is required")
    if not isinstance(values["insecure_plaintext"], bool):
        raise ConfigError(path + ": insecure_plaintext must be true or false")
    if values["broker_port"] is None:
        values["broker_port"] = 1883 if values["insecure_plaintext"] else 8883
    # brokers: [host, port] pairs tried in turn, broker_host first, then "broker_others" (the other
    # nodes of a clustered broker: "host" or "host:port", the port defaulting to broker_port)
    others = values.get("broker_others", [])
    if not isinstance(others, list):
        raise ConfigError(path + ": broker_others must be a list of \"host\" or \"host:port\"")
    brokers = [(values["broker_host"], values["broker_port"])]
    for other in others:
        host, _, port = other.partition(":") if isinstance(other, str) else ("", "", "")
        if not host or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
            raise ConfigError(path + ": broker_others must be a list of \"host\" or \"host:port\"")
        brokers.append((host, int(port) if port else values["broker_port"]))
    values["brokers"] = brokers
    for name in RANGES:
        lo, hi = RANGES[name]
        v = values[name]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError("%s: %s must be an integer in %d..%d" % (path, name, lo, hi))
    if values["backoff_min_s"] > values["backoff_max_s"]:
        raise ConfigError(path + ": backoff_min_s is above backoff_max_s")
    if not isinstance(values["roles"], list):
        raise ConfigError(path + ": roles must be a list of role names")
    cfg = Config()
    for k in values:
        setattr(cfg, k, values[k])
    return cfg
