"""Fail fast, with one line each, when a service the tests need is missing (never skip)."""

import os
import shutil
import socket
import sys

NEEDS = [
    ("Mosquitto on 127.0.0.1:1883", "127.0.0.1", 1883),
    ("PostgreSQL on 127.0.0.1:5432", "127.0.0.1", 5432),
]
BINARIES = [("mosquitto", "/usr/sbin/mosquitto"), ("chromium", None)]


def main() -> int:
    problems = []
    for name, host, port in NEEDS:
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as err:
            problems.append(f"{name} does not answer: {err}")
    for name, path in BINARIES:
        if not (shutil.which(name) or (path and os.path.exists(path))):
            problems.append(f"{name} is not installed (Debian package {name})")
    for problem in problems:
        print(f"check-services: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
