# The download and install of a checked release into the other slot (docs/ota.md, "The ESP32
# path"), in the update boot (ota_boot.py), step by step. Each file is streamed in chunks of at
# most CHUNK bytes into app_<slot>/<path>.tmp, hashed on the way, and renamed only when its size
# and SHA-256 match; a .tmp left by an interruption (a power cut, a lost link) is resumed with an
# HTTP Range from its length. app.mpy comes last, after every other file was checked again, then
# bootstate.json points at the slot with a trial and the board restarts. Only one file's entry
# (read from ota_job.txt) is in RAM, never a file or the whole list.
import hashlib
import os
import socket
import time

from micropython import const

import ota
from version import FW

CHUNK = const(1024)
_PER_STEP = const(4)  # chunks per loop turn
_TIMEOUT_S = const(10)  # per socket operation
_RETRIES = const(3)  # network failures of one update before it fails ("download")
_HEAD_LINES = const(32)


class Refused(Exception):
    # A reason to give the update up: (code, message).
    pass


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _hex(h):
    return "".join("%02x" % b for b in h.digest())


def resume(dev):
    # The job a power cut interrupted (ota.json "job", ota_job.txt), or None.
    job = ota.load().get("job")
    if not job or ota.size(ota.JOB) < 0:
        ota.remove(ota.JOB)
        return None
    n = total = 0
    with open(ota.JOB) as f:
        for line in f:
            n += 1
            total += int(line.split()[1])
    dev.log("ota: %s: resuming" % job["release"])
    return Job(dev, job, n, total)


class Job:
    def __init__(self, dev, job, n, total):
        self.dev = dev
        self.slot = ota.other(dev.boot.state["active"])
        self.dir = "app_" + self.slot + "/"
        self.oid = job["id"]
        self.release = job["release"]
        self.sha = job["sha"]
        self.n = n  # files; the last is app.mpy
        self.total = total
        self.phase = 0  # 0 clear the slot, 1 download, 2 check again, 3 app.mpy, 4 switch
        self.i = 0  # the file at work
        self.done = 0  # bytes of the files done
        self.pct = -1
        self.fails = 0
        self.entry = None  # (path, size, sha256) of the file at work
        self.sock = None
        self.f = None
        self.h = None
        self.got = 0
        self.left = -1  # body bytes the server still owes (-1: it did not say)
        self.buf = bytearray(CHUNK)

    # -- the job file ---------------------------------------------------------------------------

    def file_entry(self, i):
        with open(ota.JOB) as f:
            for _ in range(i):
                f.readline()
            path, size, sha = f.readline().split()
        return path, int(size), sha

    def listed(self, path):
        with open(ota.JOB) as f:
            for line in f:
                name = line.split(" ", 1)[0]
                if path == name or path == name + ".tmp":
                    return True
        return False

    # -- the steps ------------------------------------------------------------------------------

    def step(self):
        # One slice of work; False when the job is over (switched, or failed).
        try:
            if self.phase == 0:
                self.clear()
            elif self.phase in (1, 3):
                self.fetch()
            elif self.phase == 2:
                self.recheck()
            else:
                return self.switch()
            return True
        except Refused as e:
            self.close()
            return self.fail(e.args[0], e.args[1])
        except MemoryError:
            self.close()  # a half-handled chunk: resume from the .tmp's length next turn
            raise
        except OSError as e:  # the flash
            self.close()
            return self.fail("install", repr(e))

    def clear(self):
        # The slot cannot boot while it is written (no app.mpy), and holds nothing unlisted.
        for name in ("app.mpy", "app.py"):
            ota.remove(self.dir + name)
        try:
            os.mkdir(self.dir[:-1])
        except OSError:
            pass
        self._clear_dir(self.dir, "")
        s = ota.load()
        s["slots"][self.slot] = None
        s["slots"][ota.other(self.slot)] = FW
        ota.save(s)
        self.phase = 1
        self.report()

    def _clear_dir(self, folder, rel):
        for e in list(os.ilistdir(folder)):
            name = e[0]
            if e[1] == 0x4000:
                self._clear_dir(folder + name + "/", rel + name + "/")
            elif not self.listed(rel + name):
                ota.remove(folder + name)
                self.dev.log("ota: removed %s%s" % (folder, name))

    def report(self):
        pct = (self.done + self.got) * 100 // max(1, self.total) // 10 * 10
        if pct > self.pct:
            self.pct = pct
            ota.progress(self.dev, self.release, "downloading", pct)

    def fetch(self):
        if self.f is None:
            if self.open_file():
                return
        path, size, sha = self.entry
        for _ in range(_PER_STEP):
            if self.got >= size:
                break
            try:
                k = self.sock.readinto(self.buf, min(CHUNK, size - self.got))
            except OSError as e:
                return self.retry(e)
            if not k:
                if self.left < 0:  # the server said no length: this is all there is
                    self.close()
                    ota.remove(self.dir + path + ".tmp")
                    raise Refused("size_mismatch", "%s: %d bytes, signed %d" % (path, self.got, size))
                return self.retry("connection closed")
            view = memoryview(self.buf)[:k]
            self.h.update(view)
            self.f.write(view)
            self.got += k
            self.left -= k
        self.dev.feed()
        if self.got >= size:
            self.close()
            if _hex(self.h) != sha:
                ota.remove(self.dir + path + ".tmp")
                raise Refused("hash_mismatch", path + ": SHA-256 differs from the signed one")
            self.finish_file(path, size)
        elif self.phase == 1:
            self.report()

    def open_file(self):
        # Opens the file at work for writing; True if there is nothing to download.
        self.entry = self.file_entry(self.i)
        path, size, sha = self.entry
        final = self.dir + path
        if _size(final) == size and self.hash_file(final) == sha:
            self.finish_file(path, size, kept=True)
            return True
        ota.remove(final)
        parts = path.split("/")
        for k in range(1, len(parts)):
            try:
                os.mkdir(self.dir + "/".join(parts[:k]))
            except OSError:
                pass
        tmp = final + ".tmp"
        have = _size(tmp)
        if have > size:
            ota.remove(tmp)
            have = -1
        self.h = hashlib.sha256()
        if have > 0:
            self.hash_file(tmp, self.h)
        self.f = open(tmp, "ab")
        self.got = max(0, have)
        if self.got < size:
            try:
                self.request(sha, self.got, size)
            except OSError as e:
                self.retry(e)
                return True
        return False

    def hash_file(self, path, h=None):
        # The file's SHA-256 (hex), or, given a hasher h, the file fed into it (a digest would
        # end it: MicroPython's hashes cannot be copied or continued).
        into = h
        h = h or hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                k = f.readinto(self.buf)
                if not k:
                    break
                h.update(memoryview(self.buf)[:k])
                self.dev.feed()
        return None if into else _hex(h)

    def finish_file(self, path, size, kept=False):
        if not kept:
            os.rename(self.dir + path + ".tmp", self.dir + path)
        self.done += size
        self.got = 0
        self.f = None
        self.i += 1
        self.advance()

    def advance(self):
        # 1 -> 2 once every file but app.mpy is in, 2 -> 3 once they are checked again, 3 -> 4.
        if self.phase < 3:
            self.report()
        if self.phase == 1 and self.i >= self.n - 1:
            self.phase = 2
            self.i = 0
            ota.progress(self.dev, self.release, "verifying")
        if self.phase == 2 and self.i >= self.n - 1:
            self.phase = 3
            ota.progress(self.dev, self.release, "installing")
        if self.phase == 3 and self.i >= self.n:
            self.phase = 4

    def request(self, sha, start, size):
        url = ota.load()["job"]["url"].replace("{sha256}", sha)
        tls = url.startswith("https://")
        hostport, _, path = url[8 if tls else 7:].partition("/")
        host, _, port = hostport.partition(":")
        addr = socket.getaddrinfo(host, int(port or (443 if tls else 80)))[0][-1]
        sock = socket.socket()
        self.sock = sock
        sock.settimeout(_TIMEOUT_S)
        sock.connect(addr)
        if tls:
            sock = self.dev.link.ssl.wrap_socket(sock, server_hostname=host)
            self.sock = sock
        sock.write(("GET /%s HTTP/1.0\r\nHost: %s\r\n%s\r\n" % (
            path, hostport, "Range: bytes=%d-\r\n" % start if start else "")).encode())
        line = sock.readline()
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise OSError("bad HTTP answer")
        code = int(parts[1])
        length = -1
        first = 0
        for _ in range(_HEAD_LINES):
            line = sock.readline()
            if not line or line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"content-range":  # bytes first-last/total
                first = int(value.strip().split(b" ")[1].split(b"-")[0])
        else:
            raise OSError("HTTP header too long")
        if code == 200 and start:  # the server ignored the Range: from the beginning
            self.f.close()
            self.f = open(self.dir + self.entry[0] + ".tmp", "wb")
            self.h = hashlib.sha256()
            self.got = start = 0
        elif code == 206 and first != start:
            raise OSError("HTTP range from %d, asked for %d" % (first, start))
        elif code not in (200, 206):
            if code in (403, 404, 410):
                raise Refused("download", "HTTP %d" % code)
            raise OSError("HTTP %d" % code)
        self.left = length
        if length >= 0 and start + length != size:
            ota.remove(self.dir + self.entry[0] + ".tmp")
            raise Refused("size_mismatch", "%s: %d bytes, signed %d" % (self.entry[0], start + length, size))

    def retry(self, err):
        # A network failure: the .tmp is kept; the next try resumes from its length.
        self.close()
        self.fails += 1
        self.dev.log("ota: download: %s (%d of %d)" % (err, self.fails, _RETRIES))
        if self.fails >= _RETRIES:
            raise Refused("download", str(err))
        self.dev.feed()
        time.sleep_ms(1000 * self.fails)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        if self.f is not None:
            self.f.close()
            self.f = None

    def recheck(self):
        # Every file but app.mpy again, one per turn, before app.mpy makes the slot bootable.
        path, size, sha = self.file_entry(self.i)
        if _size(self.dir + path) != size or self.hash_file(self.dir + path) != sha:
            ota.remove(self.dir + path)
            raise Refused("install", path + " changed on flash")
        self.i += 1
        self.advance()

    def switch(self):
        s = ota.load()
        h = s.pop("job")
        s["slots"][self.slot] = h["version"]
        ota.save(s)
        boot = self.dev.boot
        trial = {"from": boot.state["active"], "id": self.oid, "release": self.release,
                 "floor": h["floor"], "keys": h["keys"], "sha": self.sha}
        boot.end(active=self.slot, tries=0, trial=trial)  # from here on the new slot boots
        ota.record(s, self.oid, self.release, "rebooting", None, self.sha)
        ota.progress(self.dev, self.release, "rebooting")
        ota.remove(ota.JOB)
        self.dev.reboot_requested = True
        return False

    def fail(self, reason, msg):
        self.buf = None  # the report's heap (the board has little left at this point)
        __import__("gc").collect()
        s = ota.load()
        s.pop("job", None)
        ota.failed(self.dev, s, self.oid, self.release, reason, msg, self.sha)
        ota.remove(ota.JOB)
        return False
