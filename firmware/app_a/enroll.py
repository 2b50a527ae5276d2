# Self-enrollment. A board flashed offline (`provision flash --offline`) holds a single-use
# enrollment token and the fleet's URL instead of a password. At its first boot with a network
# it exchanges the token (POST /api/enroll), writes the credentials into config.json and drops
# the token; from then on it is like any provisioned board.
#   network failure   retried: 2 s doubling to 60 s, until it works (the board has no other job yet)
#   token refused     (unknown, used, expired, bound to another device) one line, exit 2: a
#                     technician must re-provision; retrying could never succeed
import gc
import json
import os
import sys
import time

CONFIG = "config.json"
RESPONSE_MAX = 4096  # an answer is ~250 bytes; anything longer is not the fleet
RETRY_MIN_S = 2
RETRY_MAX_S = 60


class Refused(Exception):
    pass


def _read():
    with open(CONFIG) as f:
        return json.load(f)


def _write(raw):
    with open(CONFIG + ".tmp", "w") as f:
        json.dump(raw, f)
    try:
        os.rename(CONFIG + ".tmp", CONFIG)
    except OSError:  # FAT will not rename over a file
        os.remove(CONFIG)
        os.rename(CONFIG + ".tmp", CONFIG)


def _split(url):
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise Refused("fleet_url must be http://host[:port] or https://host[:port]")
    hostport = rest.split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return scheme == "https", host, int(port) if port else (443 if scheme == "https" else 80)


def _post(url, path, body):
    import socket

    tls, host, port = _split(url)
    addr = socket.getaddrinfo(host, port)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(15)
        sock.connect(addr)
        if tls:
            import ssl

            sock = ssl.wrap_socket(sock, server_hostname=host)
        data = json.dumps(body).encode()
        head = "POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        sock.write((head % (path, host, len(data))).encode() + data)
        answer = b""
        while len(answer) <= RESPONSE_MAX:
            chunk = sock.recv(512)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise OSError("not an HTTP answer")
    return int(parts[1]), payload


def _detail(payload):
    try:
        return str(json.loads(payload).get("detail"))
    except (ValueError, AttributeError):
        return "no detail"


def needed():
    try:
        raw = _read()
    except (OSError, ValueError):
        return False  # config.load() reports a bad config.json
    return bool(raw.get("enrollment_token")) and not raw.get("password")


def run(hal_for=None):
    """Enroll if config.json asks for it; returns when the board has credentials."""
    if not needed():
        return
    raw = _read()
    if hal_for is not None:  # bring the network up first (ESP32: wifi)
        board = hal_for()
        board.wifi_start()
        for _ in range(300):
            if board.wifi_up():
                break
            time.sleep_ms(100)
    delay = RETRY_MIN_S
    body = {"token": raw["enrollment_token"], "device_id": raw.get("device_id")}
    while True:
        try:
            status, payload = _post(raw.get("fleet_url", ""), "/api/enroll", body)
        except Refused as e:
            print("enroll: refused:", e)
            sys.exit(2)
        except OSError as e:
            print("enroll: fleet not reachable (%s); retry in %d s" % (e, delay))
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        if status == 200:
            break
        if status >= 500:
            print("enroll: fleet answered %d; retry in %d s" % (status, delay))
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        print("enroll: refused (%d): %s" % (status, _detail(payload)))
        sys.exit(2)
    answer = json.loads(payload)
    mqtt = answer["mqtt"]
    raw["device_id"] = answer["device_id"]
    raw["username"] = mqtt["username"]
    raw["password"] = mqtt["password"]
    raw.setdefault("broker_host", mqtt["host"])
    raw.setdefault("broker_port", mqtt["port"])
    del raw["enrollment_token"]
    _write(raw)
    print("enroll: enrolled as", raw["device_id"])
    gc.collect()
