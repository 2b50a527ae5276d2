"""A folder that turns a fresh Raspberry Pi into an edge device: copy it to an SD card or USB stick,
then on the Pi run `sudo sh install.sh` from it.

    agent.toml        the edge agent's config (edge.config format), without the password
    credentials.env   EDGE_BROKER__PASSWORD=... (mode 0600); or, offline, an enrollment token
                      that install.sh exchanges for credentials on first install
    ioc-edge.service  systemd unit, Restart=always
    install.sh        installs into /opt/ioc-edge/versions/<version>, points /opt/ioc-edge/current
                      at it, config in /etc/ioc-edge, state in /var/lib/ioc-edge
    src/              the agent's source (pip installs it into the versioned folder)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

from edge.config import dump_config, parse_config
from edge.errors import ConfigError
from provisioning.errors import ProvisionError
from provisioning.fleet_api import FleetClient, MqttCredentials

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SOURCE_ITEMS = ("pyproject.toml", "README.md", "edge", "fleet")
OPT = "/opt/ioc-edge"
ETC = "/etc/ioc-edge"
STATE = "/var/lib/ioc-edge"
UNIT_NAME = "ioc-edge.service"
SERVICE_USER = "ioc-edge"


def project_version() -> str:
    try:
        return installed_version("ioc-fleet")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class PiBundleRequest:
    out_dir: Path
    site: str
    name: str = ""
    ward: str = ""
    roles: tuple[str, ...] = ()
    broker_url: str | None = None  # mqtt://host:port; default: what the fleet says
    enrollment_token: str | None = None
    offline: bool = False
    fleet_url: str | None = None


UNIT = f"""[Unit]
Description=IOC edge agent (city operations centre)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={ETC}/credentials.env
ExecStart={OPT}/current/bin/edge-agent --config {ETC}/agent.toml
# 0: stopped; 75: the fleet asked for a restart; anything else: a failure. Always start again.
Restart=always
RestartSec=5
StateDirectory=ioc-edge
StateDirectoryMode=0750
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""

INSTALL = r"""#!/bin/sh
# Install the IOC edge agent __VERSION__ on this Raspberry Pi:   sudo sh install.sh
# Code:   /opt/ioc-edge/versions/__VERSION__ (a venv), /opt/ioc-edge/current -> versions/__VERSION__
# Config: /etc/ioc-edge/agent.toml, /etc/ioc-edge/credentials.env (0600)
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
        if [ -d "$HERE/wheels" ]; then
            "$DEST/bin/pip" install --quiet --no-index --find-links "$HERE/wheels" "$HERE/src"
        else
            "$DEST/bin/pip" install --quiet "$HERE/src"
        fi
    fi
    echo "$VERSION" > "$DEST/.complete"
fi
# 2. Switch `current` atomically (a new symlink renamed over the old one).
ln -sfn "versions/$VERSION" "$OPT/current.new"
mv -T "$OPT/current.new" "$OPT/current"

# 3. Config and credentials.
install -d -m 0755 "$ETC"
install -m 0644 "$HERE/agent.toml" "$ETC/agent.toml"
install -m 0600 "$HERE/credentials.env" "$ETC/credentials.env"
if grep -q '^IOC_ENROLLMENT_TOKEN=' "$ETC/credentials.env"; then
    # Offline-prepared bundle: exchange the enrollment token for credentials now.
    say "enrolling with the fleet"
    "$PYTHON" - "$ETC/credentials.env" <<'PY'
import json, sys, urllib.request, urllib.error, os
path = sys.argv[1]
env = dict(line.split("=", 1) for line in open(path).read().splitlines() if "=" in line)
body = json.dumps({"token": env["IOC_ENROLLMENT_TOKEN"], "device_id": env["IOC_DEVICE_ID"]}).encode()
req = urllib.request.Request(env["IOC_FLEET_URL"].rstrip("/") + "/api/enroll", data=body,
                             headers={"Content-Type": "application/json"})
try:
    answer = json.load(urllib.request.urlopen(req, timeout=20))
except urllib.error.HTTPError as err:
    sys.exit("install: the fleet refused the enrollment token: %s" % err.read().decode(errors="replace"))
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
    systemctl daemon-reload
    systemctl enable ioc-edge.service
    systemctl restart ioc-edge.service
fi
say "IOC edge agent $VERSION installed"
"""


def _write(path: Path, text: str, mode: int) -> Path:
    """Create with `mode` from the start: a secret is never readable by others, even briefly."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)  # the umask may have taken bits away
    return path


def _copy_source(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3*")
    dest.mkdir(parents=True, exist_ok=True)
    for item in SOURCE_ITEMS:
        source = PROJECT_ROOT / item
        if source.is_dir():
            shutil.copytree(source, dest / item, ignore=ignore, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, dest / item)


def agent_toml(device_id: str, broker_url: str, username: str, roles: tuple[str, ...]) -> str:
    """The agent's config, checked by the agent's own loader before it is written."""
    data = {"device_id": device_id, "state_dir": STATE,
            "broker": {"url": broker_url, "username": username},
            "roles": {role: {} for role in roles}}
    try:
        config = parse_config(data)
    except ConfigError as err:
        raise ProvisionError(f"the agent config would be invalid: {err}") from err
    return dump_config(config)


def check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProvisionError(f"{out}: not an empty folder; give an empty or new folder")


def write_bundle(request: PiBundleRequest, device_id: str, credentials: MqttCredentials | None) -> Path:
    """Write the bundle to `request.out_dir`; returns the folder."""
    out = request.out_dir
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if credentials is not None:
            broker_url = request.broker_url or f"mqtt://{credentials.host}:{credentials.port}"
            username = credentials.username
            secret = f"EDGE_BROKER__PASSWORD={credentials.password}\n"
        else:
            assert request.broker_url and request.enrollment_token and request.fleet_url
            broker_url, username = request.broker_url, device_id
            secret = (f"IOC_ENROLLMENT_TOKEN={request.enrollment_token}\n"
                      f"IOC_FLEET_URL={request.fleet_url}\nIOC_DEVICE_ID={device_id}\n")
        version = project_version()
        _write(out / "agent.toml", agent_toml(device_id, broker_url, username, request.roles), 0o644)
        _write(out / "credentials.env", secret, 0o600)
        _write(out / UNIT_NAME, UNIT, 0o644)
        _write(out / "install.sh", INSTALL.replace("__VERSION__", version), 0o755)
        _copy_source(out / "src")
    except OSError as err:
        raise ProvisionError(f"{out}: cannot write the bundle: {err.strerror or err}") from err
    return out


def make_pi_bundle(request: PiBundleRequest, fleet: FleetClient | None, device_id: str) -> Path:
    """Register the Pi (unless offline) and write its bundle; revoke the credentials if that fails."""
    check_out_dir(request.out_dir)
    if request.offline:
        if not (request.enrollment_token and request.broker_url and request.fleet_url):
            raise ProvisionError("--offline needs --enrollment-token, --broker and --fleet "
                                 "(the Pi enrolls itself when install.sh runs)")
        return write_bundle(request, device_id, None)
    if fleet is None:
        raise ProvisionError("no fleet to register with: pass --fleet URL, or --offline")
    if request.enrollment_token:
        credentials = fleet.enroll(request.enrollment_token, device_id, request.name or None)
    else:
        fleet.create_device(device_id, "pi", name=request.name, ward=request.ward, site=request.site,
                            tags=list(request.roles))
        credentials = fleet.issue_credentials(device_id)
    try:
        return write_bundle(request, device_id, credentials)
    except ProvisionError as err:
        if not request.enrollment_token:
            try:
                fleet.revoke_credentials(device_id)
                err.message += f"; the credentials issued for {device_id} were revoked"
            except ProvisionError as again:
                err.message += f"; revoking the credentials of {device_id} failed too ({again.message})"
        raise
