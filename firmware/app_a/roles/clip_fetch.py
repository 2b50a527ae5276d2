# Download a clip over HTTP into the clip folder, checking its length and SHA-256 on the way.
# Imported only while a download runs. The file appears under its name only when it is whole
# and right (written as name.tmp, renamed at the end).
import binascii
import hashlib
import os
import socket

TIMEOUT_S = 10  # per socket operation
CHUNK = 512


def fetch(args, folder, feed):
    url = args["url"]
    if not url.startswith("http://"):
        return "error", "only http:// URLs"
    hostport, _, path = url[7:].partition("/")
    host, _, port = hostport.partition(":")
    tmp = folder + args["name"] + ".tmp"
    sock = socket.socket()
    try:
        sock.settimeout(TIMEOUT_S)
        sock.connect(socket.getaddrinfo(host, int(port or 80))[0][-1])
        sock.send(("GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, hostport)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = sock.recv(1)
            if not b or len(head) > 2048:
                return "error", "bad HTTP answer"
            head += b
        if head.split(b" ", 2)[1] != b"200":
            return "error", "HTTP " + head.split(b" ", 2)[1].decode()
        h = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as f:
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                n += len(data)
                if n > args["bytes"]:
                    break
                h.update(data)
                f.write(data)
                feed()
        digest = binascii.hexlify(h.digest()).decode()
        if n != args["bytes"] or digest != args["sha256"].lower():
            os.remove(tmp)
            return "error", "checksum mismatch: %d bytes, sha256 %s" % (n, digest)
        os.rename(tmp, folder + args["name"] + ".wav")
        return "ok", {"bytes": n, "sha256": digest}
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        return "error", "download failed: %r" % e
    finally:
        sock.close()
