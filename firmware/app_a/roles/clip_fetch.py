# Download a clip over HTTP into the clip folder, checking its length and SHA-256 on the way.
# Imported only while a download runs (after clip_room.py has made room). The file appears under
# its name only when it is whole and right (written as name.tmp, renamed at the end).
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
        # one buffer for the whole download (the heap is short when a clip is fetched: a new
        # bytes object per chunk, or per header byte, left it fragmented)
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        head = bytearray()
        while head[-4:] != b"\r\n\r\n":
            if sock.readinto(buf, 1) != 1 or len(head) > 2048:
                return "error", "bad HTTP answer"
            head.append(buf[0])
        status = bytes(head).split(b" ", 2)[1]
        if status != b"200":
            return "error", "HTTP " + status.decode()
        head = None
        h = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as f:
            while True:
                k = sock.readinto(buf)
                if not k:
                    break
                n += k
                if n > args["bytes"]:
                    break
                h.update(mv[:k])
                f.write(mv[:k])
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
