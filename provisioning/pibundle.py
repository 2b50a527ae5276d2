"""A folder that turns a fresh Raspberry Pi into an edge device: copy it to an SD card or USB stick,
then on the Pi run `sudo sh install.sh` from it.

    agent.toml        the edge agent's config (edge.config format), without the password
    ca.pem            the CA the agent checks the broker's certificate with (with --ca-file)
    credentials.env   EDGE_BROKER__PASSWORD=... (mode 0600); or, offline, an enrollment token
                      that install.sh exchanges for credentials on first install
    ioc-edge.service  systemd unit, Restart=always, ExecStart=/opt/ioc-edge/launch
    launch            edge/launcher.py: counts a new version's trial starts, rolls back (stdlib only)
    ota_keys.json     the release keys the agent trusts (with --ota-keys; docs/ota.md), for install.sh
                      to place at /etc/ioc-edge/ota_keys.json
    install.sh        installs into /opt/ioc-edge/versions/<version>, points /opt/ioc-edge/current
                      at it, config in /etc/ioc-edge, state in /var/lib/ioc-edge
    requirements.lock every wheel below, pinned to its SHA-256
    wheels/           the project's wheel and the edge agent's dependencies (provisioning.wheels)

The bundle is written to a scratch folder next to `--out` and renamed into place when complete:
a failure leaves no half-written bundle behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edge.config import dump_config, parse_config
from edge.errors import ConfigError
from edge.roles import ROLES
from provisioning.broker_tls import BrokerAddress, TransportChoice
from provisioning.errors import ProvisionError
from provisioning.fleet_api import FleetClient, MqttCredentials
from provisioning.wheels import EDGE_DISTRIBUTION, LockedWheel, WheelTarget, write_wheel_set

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OPT = "/opt/ioc-edge"
ETC = "/etc/ioc-edge"
STATE = "/var/lib/ioc-edge"
UNIT_NAME = "ioc-edge.service"
SERVICE_USER = "ioc-edge"
CA_NAME = "ca.pem"
LOCK_NAME = "requirements.lock"
OTA_KEYS_NAME = "ota_keys.json"
LAUNCHER_NAME = "launch"


@dataclass(frozen=True)
class PiBundleRequest:
    out_dir: Path
    site: str
    transport: TransportChoice
    name: str = ""
    ward: str = ""
    roles: tuple[str, ...] = ()
    enrollment_token: str | None = None
    offline: bool = False
    fleet_url: str | None = None
    wheels: WheelTarget = field(default_factory=WheelTarget)
    ota_keys: str | None = None  # ota_keys.json text (provisioning.release.trust_list)


UNIT = f"""[Unit]
Description=IOC edge agent (city operations centre)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={ETC}/credentials.env
# launch (never replaced by an update) counts a new version's starts and goes back after 3
ExecStart={OPT}/launch --config {ETC}/agent.toml
# 0: stopped; 75: the fleet asked for a restart; anything else: a failure. Always start again.
Restart=always
RestartSec=5
StateDirectory=ioc-edge
StateDirectoryMode=0750
NoNewPrivileges=yes
ProtectSystem=strict
# OTA updates: new versions/ folders and the `current` link (the folder is root's, sticky: launch stays root's)
ReadWritePaths={OPT}
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""

INSTALL = r"""#!/bin/sh
# Install the IOC edge agent __VERSION__ on this Raspberry Pi:   sudo sh install.sh
# Code:   /opt/ioc-edge/versions/__VERSION__ (a venv), /opt/ioc-edge/current -> versions/__VERSION__
# Config: /etc/ioc-edge/agent.toml, /etc/ioc-edge/ca.pem, /etc/ioc-edge/credentials.env (0600)
# State:  /var/lib/ioc-edge (kept across versions)
# Running it again is safe; an interrupted install is redone. IOC_EDGE_ROOT=/some/dir stages the
# whole layout under that folder without creating users or touching systemd (for checking it).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VERSION="__VERSION__"
ROOT="${IOC_EDGE_ROOT:-}"
PYTHON="${IOC_EDGE_PYTHON:-python3}"
OPT="$ROOT/opt/ioc-edge"
ETC="$ROOT/etc/ioc-edge"
STATE="$ROOT/var/lib/ioc-edge"
UNITS="$ROOT/etc/systemd/system"
DEST="$OPT/versions/$VERSION"
say() { echo "install: $*"; }

# 0. The wheels are for __TARGET__: Python __TARGET_PYTHON__ on __TARGET_MACHINES__ (machine/pointer bits).
#    Another machine is told so before anything is made (pip would refuse a wheel less clearly).
"$PYTHON" - "__TARGET__" "__TARGET_PYTHON__" "__TARGET_MACHINES__" <<'PY' || exit 1
import platform, sys
target, python, machines = sys.argv[1], sys.argv[2], sys.argv[3].split()
have_python = "%d.%d" % sys.version_info[:2]
have_machine = "%s/%d" % (platform.machine(), 64 if sys.maxsize > 2**32 else 32)
if have_python != python or (machines and have_machine not in machines):
    sys.exit("install: this bundle is for %s (Python %s on %s); this machine runs Python %s on %s: "
             "make its bundle with provision pi-bundle --target (docs/provisioning.md)"
             % (target, python, " or ".join(machines) or "its platform tags", have_python, have_machine))
PY

# 1. The code, in its own versioned folder; ".complete" is written last, so a folder without it
#    is an interrupted install and is made again.
if [ ! -f "$DEST/.complete" ]; then
    rm -rf "$DEST"
    mkdir -p "$OPT/versions"
    say "creating $DEST"
    if [ -n "${IOC_EDGE_SKIP_PIP:-}" ]; then  # checking the layout only
        "$PYTHON" -m venv --without-pip "$DEST"
    else
        "$PYTHON" -m venv "$DEST"
        # Only the wheels shipped here, each checked against its SHA-256 in requirements.lock; no
        # index and none of this machine's pip settings (a Pi's /etc/pip.conf names piwheels).
        # --no-deps: the lock is the complete list (see its header).
        if ! env -i PATH="$PATH" HOME="${HOME:-/root}" PIP_CONFIG_FILE=/dev/null \
            "$DEST/bin/pip" install --quiet --no-input --no-cache-dir --disable-pip-version-check \
            --no-index --find-links "$HERE/wheels" --require-hashes --no-deps -r "$HERE/requirements.lock"; then
            rm -rf "$DEST"
            echo "install: the shipped wheels did not install (see above); nothing was changed" >&2
            exit 1
        fi
    fi
    echo "$VERSION" > "$DEST/.complete"
fi
# 2. Switch `current` atomically (a new symlink renamed over the old one).
ln -sfn "versions/$VERSION" "$OPT/current.new"
mv -T "$OPT/current.new" "$OPT/current"

# 2b. The launcher (systemd's ExecStart): this system's python3 and its standard library only; an
#     update never replaces it. Its first line names the Python that runs it.
{ printf '#!%s\n' "$(command -v "$PYTHON")"; tail -n +2 "$HERE/launch"; } > "$OPT/launch.new"
chmod 0755 "$OPT/launch.new"
mv -f "$OPT/launch.new" "$OPT/launch"

# 3. Config, the broker's CA and credentials.
install -d -m 0755 "$ETC"
install -m 0644 "$HERE/agent.toml" "$ETC/agent.toml"
if [ -f "$HERE/ca.pem" ]; then
    install -m 0644 "$HERE/ca.pem" "$ETC/ca.pem"
else
    rm -f "$ETC/ca.pem"
fi
install -m 0600 "$HERE/credentials.env" "$ETC/credentials.env"
# The release keys the agent trusts for OTA updates (docs/ota.md); without them it refuses every update.
if [ -f "$HERE/ota_keys.json" ]; then
    install -m 0644 "$HERE/ota_keys.json" "$ETC/ota_keys.json"
else
    rm -f "$ETC/ota_keys.json"
fi
if grep -q '^IOC_ENROLLMENT_TOKEN=' "$ETC/credentials.env"; then
    # Offline-prepared bundle: exchange the enrollment token for credentials now. HTTPS is checked
    # against the system's CAs and the bundle's ca.pem.
    say "enrolling with the fleet"
    "$PYTHON" - "$ETC/credentials.env" "$HERE/ca.pem" <<'PY'
import json, os, ssl, sys, urllib.error, urllib.request
path, ca = sys.argv[1], sys.argv[2]
env = dict(line.split("=", 1) for line in open(path).read().splitlines() if "=" in line)
context = ssl.create_default_context()
if os.path.exists(ca):
    context.load_verify_locations(ca)
body = json.dumps({"token": env["IOC_ENROLLMENT_TOKEN"], "device_id": env["IOC_DEVICE_ID"]}).encode()
req = urllib.request.Request(env["IOC_FLEET_URL"].rstrip("/") + "/api/enroll", data=body,
                             headers={"Content-Type": "application/json"})
try:
    answer = json.load(urllib.request.urlopen(req, timeout=20, context=context))
except urllib.error.HTTPError as err:
    if err.code == 429:  # throttled (another client at this address guessed tokens): not a refusal
        sys.exit("install: the fleet asks to wait %s s before enrolling again; run install.sh again then"
                 % err.headers.get("Retry-After", "a few"))
    sys.exit("install: the fleet refused the enrollment token (HTTP %d)" % err.code)
except OSError as err:
    sys.exit("install: cannot reach the fleet to enroll (%s); connect the Pi and run install.sh again" % err)
fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("EDGE_BROKER__PASSWORD=%s\n" % answer["mqtt"]["password"])
os.replace(path + ".new", path)
PY
fi

# 4. State folder, service user, unit.
install -d -m 0750 "$STATE"
install -d -m 0755 "$UNITS"
install -m 0644 "$HERE/ioc-edge.service" "$UNITS/ioc-edge.service"
if [ -z "$ROOT" ]; then
    id -u ioc-edge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ioc-edge --shell /usr/sbin/nologin ioc-edge
    chown ioc-edge:ioc-edge "$STATE"
    # OTA: the agent writes versions/ and replaces the `current` link; /opt/ioc-edge stays root's,
    # sticky, so the agent cannot remove or replace launch.
    chown -R ioc-edge:ioc-edge "$OPT/versions"
    chown -h ioc-edge:ioc-edge "$OPT/current"
    chown root:ioc-edge "$OPT"
    chmod 1775 "$OPT"
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable ioc-edge.service
        systemctl restart ioc-edge.service
    else
        # No running systemd (a chroot, a container, an image being prepared): the unit is in
        # place and starts at the next boot of a systemd machine; nothing is started now.
        if command -v systemctl >/dev/null 2>&1; then
            systemctl enable ioc-edge.service >/dev/null 2>&1 || true
        fi
        say "systemd is not running here: the agent was not started (the unit starts it with the machine)"
    fi
fi
say "IOC edge agent $VERSION installed"
"""


def install_script(version: str, target: WheelTarget) -> str:
    """install.sh for this bundle: its version, and the machine its wheels are for."""
    values = {"__VERSION__": version, "__TARGET_PYTHON__": target.python,
              "__TARGET_MACHINES__": " ".join(target.machines), "__TARGET__": target.label}
    script = INSTALL
    for key, value in values.items():
        script = script.replace(key, value)
    return script


def _write(path: Path, text: str, mode: int) -> Path:
    """Create with `mode` from the start: a secret is never readable by others, even briefly."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)  # the umask may have taken bits away
    return path


def agent_toml(device_id: str, broker: BrokerAddress, username: str, roles: tuple[str, ...], *,
               ca_file: str | None, fleet_url: str | None = None) -> str:
    """The agent's config, checked by the agent's own loader before it is written. `fleet_url` (the
    address the bundle registered or enrolls with) becomes `[fleet] url`, where the camera role
    uploads its snapshots; over https:// it is checked against the same CA file as the broker."""
    broker_table: dict[str, str] = {"url": broker.url, "username": username}
    if ca_file is not None:
        broker_table["ca_file"] = ca_file  # relative: next to agent.toml
    data: dict[str, object] = {"device_id": device_id, "state_dir": STATE, "broker": broker_table,
                               "roles": {role: {} for role in roles}}
    if fleet_url:
        fleet_table = {"url": fleet_url}
        if ca_file is not None and urlsplit(fleet_url).scheme == "https":
            fleet_table["ca_file"] = ca_file
        data["fleet"] = fleet_table
    try:
        config = parse_config(data)
    except ConfigError as err:
        raise ProvisionError(f"the agent config would be invalid: {err}") from err
    return dump_config(config)


def check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProvisionError(f"{out}: not an empty folder; give an empty or new folder")


def check_request(request: PiBundleRequest) -> None:
    """Everything that can be refused before anything is registered or downloaded."""
    check_out_dir(request.out_dir)
    unknown = [role for role in request.roles if role not in ROLES]
    if unknown:
        raise ProvisionError(f"--role {unknown[0]}: no such role (known: {', '.join(sorted(ROLES))})")
    if request.offline:
        if not (request.enrollment_token and request.transport.override and request.fleet_url):
            raise ProvisionError("--offline needs --enrollment-token, --broker and --fleet "
                                 "(the Pi enrolls itself when install.sh runs)")
        if urlsplit(request.fleet_url).scheme != "https" and not request.transport.plaintext:
            raise ProvisionError("--fleet must be https:// for an offline bundle: the Pi gets its password from "
                                 "it when install.sh runs (--insecure-plaintext allows http:// on a lab network)")


def bundle_version(wheels: list[LockedWheel]) -> str:
    """The project's version and a digest of the whole wheel set: another set, another folder."""
    project = next((wheel for wheel in wheels if wheel.name == EDGE_DISTRIBUTION), None)
    if project is None:
        raise ProvisionError("the project's own wheel is missing from the wheel set")
    digest = hashlib.sha256("".join(f"{wheel.line}\n" for wheel in wheels).encode()).hexdigest()
    return f"{project.version}-{digest[:12]}"


def _fleet_address(credentials: MqttCredentials) -> BrokerAddress:
    return BrokerAddress(credentials.host, credentials.port, credentials.tls)


def write_files(folder: Path, request: PiBundleRequest, device_id: str, credentials: MqttCredentials | None,
                version: str) -> None:
    """Everything but the wheels, into the scratch folder."""
    transport = request.transport
    broker = transport.resolve(_fleet_address(credentials) if credentials else None)
    if credentials is not None:
        username = credentials.username
        secret = f"EDGE_BROKER__PASSWORD={credentials.password}\n"
    else:
        assert request.enrollment_token and request.fleet_url
        username = device_id
        secret = (f"IOC_ENROLLMENT_TOKEN={request.enrollment_token}\n"
                  f"IOC_FLEET_URL={request.fleet_url}\nIOC_DEVICE_ID={device_id}\n")
    ca_file = CA_NAME if broker.tls and transport.ca_pem else None
    try:
        _write(folder / "agent.toml", agent_toml(device_id, broker, username, request.roles, ca_file=ca_file,
                                                 fleet_url=request.fleet_url), 0o644)
        if ca_file is not None and transport.ca_pem is not None:
            _write(folder / CA_NAME, transport.ca_pem, 0o644)
        _write(folder / "credentials.env", secret, 0o600)
        _write(folder / UNIT_NAME, UNIT, 0o644)
        _write(folder / LAUNCHER_NAME, (PROJECT_ROOT / "edge" / "launcher.py").read_text(), 0o755)
        if request.ota_keys is not None:
            _write(folder / OTA_KEYS_NAME, request.ota_keys, 0o644)
        _write(folder / "install.sh", install_script(version, request.wheels), 0o755)
    except OSError as err:
        raise ProvisionError(f"{request.out_dir}: cannot write the bundle: {err.strerror or err}") from err


def _scratch_folder(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as err:
        raise ProvisionError(f"{out}: cannot write the bundle: {err.strerror or err}") from err


def _move_into_place(scratch: Path, out: Path) -> None:
    try:
        os.chmod(scratch, 0o755)  # mkdtemp made it 0700
        os.rename(scratch, out)  # also over an empty folder
    except OSError as err:
        raise ProvisionError(f"{out}: cannot write the bundle: {err.strerror or err}") from err


def _register(request: PiBundleRequest, fleet: FleetClient | None, device_id: str) -> MqttCredentials | None:
    if request.offline:
        return None
    if fleet is None:
        raise ProvisionError("no fleet to register with: pass --fleet URL, or --offline")
    if request.enrollment_token:
        return fleet.enroll(request.enrollment_token, device_id, request.name or None)
    fleet.create_device(device_id, "pi", name=request.name, ward=request.ward, site=request.site,
                        tags=list(request.roles))
    return fleet.issue_credentials(device_id)


def make_pi_bundle(request: PiBundleRequest, fleet: FleetClient | None, device_id: str) -> Path:
    """Check, gather the wheels, register the Pi (unless offline) and write its bundle; the
    credentials are revoked if anything after registering fails."""
    check_request(request)
    if not request.offline and fleet is None:
        raise ProvisionError("no fleet to register with: pass --fleet URL, or --offline")
    out = request.out_dir
    scratch = _scratch_folder(out)
    try:
        wheels = write_wheel_set(scratch / "wheels", scratch / LOCK_NAME, roles=request.roles,
                                 project_root=PROJECT_ROOT, target=request.wheels)
        version = bundle_version(wheels)
        credentials = _register(request, fleet, device_id)
        try:
            write_files(scratch, request, device_id, credentials, version)
            check_out_dir(out)
            _move_into_place(scratch, out)
        except ProvisionError as err:
            if credentials is not None and not request.enrollment_token and fleet is not None:
                _revoke(fleet, device_id, err)
            raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    return out


def _revoke(fleet: FleetClient, device_id: str, err: ProvisionError) -> None:
    try:
        fleet.revoke_credentials(device_id)
        err.message += f"; the credentials issued for {device_id} were revoked"
    except ProvisionError as again:
        err.message += f"; revoking the credentials of {device_id} failed too ({again.message})"

