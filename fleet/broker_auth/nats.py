"""Per-device accounts on a NATS cluster's MQTT gateway (FLEET_BROKER_ACCOUNTS=nats).

NATS 2.9 has no dynamic-security API for its configured users: its accounts live in its config.
So the fleet keeps them in an authorization include file that every node's config includes
(`include auth.conf`), rewrites it whole on every change and signals every node to reload it
(SIGHUP to the pid in each node's pid file). The rules are contract/acl.py's, in NATS subjects
(an MQTT topic `a/b/+/#` is the subject `a.b.*.>`). Passwords are kept as bcrypt hashes, the
form nats-server accepts (`$2a$…`); the fleet keeps the set of accounts in a JSON state file
next to it (device id → hash), 0600 like the include file.

Several fleet instances on one host share the files under an exclusive lock (fcntl.flock on
`<auth file>.lock`): each change reads the state, changes one account, writes both files
(a new file renamed over the old) and signals the nodes, all under the lock.

What this needs: the fleet runs where it can write the include file that the nodes read and
signal their processes (one host, or a shared folder and a pid file per node that the fleet can
signal). A node that is down misses the signal but reads the file when it starts again.

On reload nats-server checks every connected client again: a client whose user is gone or whose
password changed is disconnected, and permissions of the others are replaced (see docs/brokers.md
for what was seen).
"""

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import bcrypt

from contract.acl import device_rules, fleet_rules
from fleet.broker_auth.accounts import AccountsError, refuse_reserved, reserved_for_fleet

log = logging.getLogger(__name__)


MQTT_DELIVERY = "$MQTT.sub.>"


def subject(topic: str) -> str:
    """An MQTT topic or filter as the NATS subject the gateway maps it to."""
    return ".".join({"+": "*", "#": ">"}.get(part, part) for part in topic.split("/"))


def _permissions(rules: list[tuple[str, str]]) -> dict[str, dict[str, list[str]]]:
    publish: list[str] = []
    subscribe: list[str] = []
    for access, topic in rules:
        if access == "publish":
            publish.append(subject(topic))
        elif access == "subscribe":
            subscribe.append(subject(topic))
            if topic.endswith("/#"):  # MQTT's `a/#` also matches `a` itself; the gateway subscribes both
                subscribe.append(subject(topic[:-2]))
    # NATS has no separate "receive" right: what a client may subscribe to is what it receives.
    # A QoS 1 subscription is a JetStream consumer delivering to `$MQTT.sub.<random>`, which the
    # gateway subscribes in the client's name: without this right every QoS 1 SUBSCRIBE fails.
    subscribe.append(MQTT_DELIVERY)
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def device_permissions(device_id: str) -> dict[str, dict[str, list[str]]]:
    return _permissions(device_rules(device_id))


def fleet_permissions() -> dict[str, dict[str, list[str]]]:
    return _permissions(fleet_rules())


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=11)).decode()


def render_auth(fleet_user: str, fleet_password: str, devices: dict[str, str]) -> str:
    """The authorization block: the fleet's account, then one user per device (bcrypt hashes).
    JSON values are valid NATS config values, so every string is written as JSON."""
    users = [{"user": fleet_user, "password": fleet_password, "permissions": fleet_permissions()}]
    users += [{"user": device_id, "password": devices[device_id], "permissions": device_permissions(device_id)}
              for device_id in sorted(devices)]
    lines = ["# written by the fleet (fleet/broker_auth/nats.py): every change rewrites this file", "authorization {",
             "  users = ["]
    lines += [f"    {json.dumps(user)}" for user in users]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    """A new 0600 file renamed over the old one: a node reloading meanwhile reads one or the other."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class NatsAccounts:
    """The fleet's side of a NATS cluster's accounts: an include file, its state, the nodes' pids."""

    def __init__(self, *, auth_file: Path, pid_files: list[Path], fleet_user: str, fleet_password: str,
                 fleet_client_id: str, state_file: Path | None = None) -> None:
        if not pid_files:
            raise AccountsError("FLEET_NATS_PID_FILES must name every NATS node's pid file")
        self.auth_file = auth_file
        self.state_file = state_file or auth_file.with_suffix(".json")
        self.lock_file = auth_file.with_name(auth_file.name + ".lock")
        self.pid_files = pid_files
        self.fleet_user = fleet_user
        self._fleet_password = fleet_password  # bcrypt-hashed at the start, before it is written
        self.fleet_client_id = fleet_client_id

    async def __aenter__(self) -> "NatsAccounts":
        """Write the file from the state (the fleet's own account may have a new password) and
        tell the nodes."""
        self._fleet_password = await asyncio.to_thread(hash_password, self._fleet_password)
        await asyncio.to_thread(self._change, None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_state(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise AccountsError(f"cannot read the NATS accounts state {self.state_file}: {err}") from err
        devices = data.get("devices", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in devices.items()}

    def _change(self, change: tuple[str, str | None] | None) -> None:
        try:
            with self._locked():
                devices = self._read_state()
                if change is not None:
                    device_id, hashed = change
                    if hashed is None:
                        if devices.pop(device_id, None) is None:
                            return  # nothing to remove: no file to write, nobody to tell
                    else:
                        devices[device_id] = hashed
                _write_private(self.state_file, json.dumps({"devices": devices}, indent=1, sort_keys=True))
                _write_private(self.auth_file, render_auth(self.fleet_user, self._fleet_password, devices))
                self._signal_nodes()
        except OSError as err:
            raise AccountsError(f"cannot write the NATS accounts file {self.auth_file}: {err}") from err

    def _signal_nodes(self) -> None:
        """SIGHUP every running node (nats-server reloads its config on it). A node that is down
        reads the file when it starts; if none is running, nothing took the change."""
        reached = 0
        for pid_file in self.pid_files:
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGHUP)
                reached += 1
            except (OSError, ValueError) as err:
                log.warning("NATS node of %s not signalled (%s); it reads the accounts when it starts", pid_file, err)
        if reached == 0:
            raise AccountsError("no NATS node could be told to reload its accounts")

    def _reserved(self, device_id: str) -> bool:
        return reserved_for_fleet(device_id, fleet_username=self.fleet_user, fleet_client_id=self.fleet_client_id)

    async def set_device_password(self, device_id: str, password: str) -> None:
        refuse_reserved(device_id, fleet_username=self.fleet_user, fleet_client_id=self.fleet_client_id)
        hashed = await asyncio.to_thread(hash_password, password)
        await asyncio.to_thread(self._change, (device_id, hashed))
        log.info("NATS account for %s set", device_id)

    async def remove_device(self, device_id: str) -> None:
        if self._reserved(device_id):
            return
        await asyncio.to_thread(self._change, (device_id, None))
        log.info("NATS account for %s removed", device_id)
