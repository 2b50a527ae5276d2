# Self-enrollment. A board flashed offline (`provision flash --offline`) holds a single-use
# enrollment token and the fleet's URL instead of a password. At its first boot with a network
# it exchanges the token (POST /api/enroll), writes the credentials into config.json and drops
# the token; from then on it is like any provisioned board.
# The fleet is spoken to over HTTPS, its certificate checked against ca.der and the URL's host
# name (trust.py) before the token is written; an http:// fleet_url is refused unless
# config.json has "insecure_plaintext": true (a lab network).
#   network failure   retried: 2 s doubling to 60 s, until it works (the board has no other job yet)
#   untrusted fleet   (certificate not from ca.der, or for another name) retried the same way: the
#                     token was not sent; a board whose clock was unknown may have it by then
#   fleet busy        (5xx, or 429: too many refused enrollments from this address) retried the same way
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


class Untrusted(Exception):
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


def _split(url, plaintext):
    # plaintext: the board has insecure_plaintext (and no CA): http:// only
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise Refused("fleet_url must be https://host[:port]")
    if scheme == "http" and not plaintext:
        raise Refused("fleet_url is http://: the token would cross the network readable; use "
                      "https:// (insecure_plaintext only on a lab network)")
    if scheme == "https" and plaintext:
        raise Refused("fleet_url is https:// but insecure_plaintext is set: no CA to check it with")
    hostport = rest.split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return scheme == "https", host, int(port) if port else (443 if scheme == "https" else 80)


def _post(url, path, body, ssl):
    # ssl: the TLS context (trust.py), or None when plaintext is allowed
    import socket

    tls, host, port = _split(url, ssl is None)
    addr = socket.getaddrinfo(host, port)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(15)
        sock.connect(addr)
        if tls:
            try:
                sock = ssl.wrap_socket(sock, server_hostname=host)
            except ValueError as e:  # mbedtls refused the certificate; nothing was sent
                raise Untrusted(str(e).strip().replace("\n", "; "))
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


def _context(raw):
    if raw.get("insecure_plaintext") is True:
        return None
    import trust

    try:
        return trust.context()
    finally:
        del sys.modules["trust"]


def _network(board):
    # wifi, and the clock: the fleet's certificate is checked against the date, an ESP32 starts
    # in 2000, and the fleet's set_time cannot reach a board before it has enrolled
    if not board:
        import config
        import hal

        cfg = config.load()
        board.append((hal.load(cfg), cfg.ntp_host))
    hw, ntp_host = board[0]
    hw.wifi_start()
    for _ in range(300):
        if hw.wifi_up():
            break
        time.sleep_ms(100)
    if hw.now_ms() is None:
        hw.ntp_sync(ntp_host)


def run():
    """Enroll if config.json asks for it; returns when the board has credentials."""
    if not needed():
        return
    raw = _read()
    try:
        ssl = _context(raw)
    except ValueError as e:  # config.ConfigError: ca.der missing or damaged
        print("enroll: refused:", e)
        sys.exit(2)
    delay = RETRY_MIN_S
    body = {"token": raw["enrollment_token"], "device_id": raw.get("device_id")}
    board = []
    while True:
        _network(board)
        why = None
        try:
            status, payload = _post(raw.get("fleet_url", ""), "/api/enroll", body, ssl)
        except Refused as e:
            print("enroll: refused:", e)
            sys.exit(2)
        except Untrusted as e:
            why = "fleet not trusted (%s); the token was not sent" % e
        except OSError as e:
            why = "fleet not reachable (%s)" % e
        if why is None and status == 200:
            break
        if why is None and status < 500 and status != 429:  # 429: throttled, try again later
            print("enroll: refused (%d): %s" % (status, _detail(payload)))
            sys.exit(2)
        print("enroll: %s; retry in %d s" % (why or "fleet answered %d" % status, delay))
        time.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)
    ssl = None
    answer = json.loads(payload)
    mqtt = answer["mqtt"]
    raw["device_id"] = answer["device_id"]
    raw["username"] = mqtt["username"]
    raw["password"] = mqtt["password"]
    raw.setdefault("broker_host", mqtt["host"])
    raw.setdefault("broker_port", mqtt["port"])
    if mqtt.get("tls") is False and raw.get("insecure_plaintext") is not True:
        print("enroll: the fleet says its broker speaks plaintext; this board connects with TLS only")
    del raw["enrollment_token"]
    _write(raw)
    print("enroll: enrolled as", raw["device_id"])
    gc.collect()
