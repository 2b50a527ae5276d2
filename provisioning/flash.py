"""Flashing one ESP32: check the board, register it, write it, reset it, see it come online.

The order is chosen so that nothing is left half-done:
- the board is checked (MicroPython answers) before the fleet is asked for anything;
- credentials are issued only once the board has answered, and revoked again if writing the
  board fails afterwards (no live credentials that no board holds);
- the board is written marker-first (see `provisioning.image`), so an interrupted flash is
  recognised and redone cleanly, under the same device id, by the next run.

Transport (provisioning.broker_tls, the same rule as `pi-bundle`): the board speaks TLS to its
broker and its fleet and checks their certificates against the CA file it is given (`ca.der` on
the board; an ESP32 has no store of its own); plaintext only with `--insecure-plaintext` (a lab
network). What the fleet says of its broker (`tls` in the credentials) must agree: a plaintext
board would send its password readable to a TLS port, a TLS board could never connect to a
plaintext one. A disagreement is refused before the board is written, and credentials already
issued are revoked.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioning.board import BoardInfo, BoardLink, SerialBoard
from provisioning.broker_tls import BrokerAddress, TransportChoice
from provisioning.errors import FirmwareMismatch, NotOnline, ProvisionError
from provisioning.fleet_api import FleetClient, MqttCredentials
from provisioning.image import (
    BOOT_STAGE,
    CA_FILE,
    CONFIG,
    MANIFEST,
    MARKER,
    WIPE,
    FirmwareImage,
    board_ca,
    board_config,
    hashes_code,
    manifest,
    marker,
    mkdirs_code,
    parse_marker,
    rm_tree_code,
    sha256,
)
from provisioning.progress import Reporter

ESP32_KINDS = ("light", "speaker", "sensor")
# `sim` is the simulated sensor every firmware has: for demos and tests, not for the field.
ALL_KINDS = (*ESP32_KINDS, "sim")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def slug(text: str) -> str:
    """'Chợ Đồng Xoài' -> 'cho-dong-xoai': ASCII, lower case, words joined by '-'."""
    text = text.replace("đ", "d").replace("Đ", "D")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def new_device_id(prefix: str, site: str) -> str:
    """`{prefix}-{site slug}-{4 hex}`, at most 63 characters (the contract's device id)."""
    suffix = secrets.token_hex(2)
    room = 63 - len(prefix) - len(suffix) - 2
    site_part = slug(site)[:room].strip("-")
    device_id = f"{prefix}-{site_part}-{suffix}" if site_part else f"{prefix}-{suffix}"
    assert DEVICE_ID_RE.match(device_id), device_id
    return device_id


@dataclass(frozen=True)
class FlashRequest:
    kind: str
    site: str
    transport: TransportChoice  # --broker (overrides what the fleet says), --ca-file, --insecure-plaintext
    name: str = ""
    ward: str = ""
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    enrollment_token: str | None = None
    offline: bool = False
    fleet_url: str | None = None  # written for self-enrollment in offline mode
    wait_s: float = 60.0


@dataclass(frozen=True)
class FlashResult:
    port: str
    device_id: str
    board: BoardInfo
    fw: str
    status: str  # online | offline | unverified
    write_s: float
    online_after_s: float | None
    total_s: float

    def line(self) -> str:
        state = {"online": "online",
                 "offline": "written (offline: it enrolls on first connect)",
                 "unverified": "written and enrolled (not verified: no API token to ask the fleet)"}
        timing = f"written in {self.write_s:.1f} s"
        if self.online_after_s is not None:
            timing += f", online {self.online_after_s:.1f} s after reset"
        return (f"ok {self.port} {self.device_id} {state[self.status]}: {self.board.describe()}, "
                f"fw {self.fw}; {timing}; total {self.total_s:.1f} s")


NEEDS_CA = ("the board speaks TLS to its broker and fleet and must check their certificates: give "
            "--ca-file FILE (the CA that signed them); --insecure-plaintext only on a lab network")


def board_transport(broker: str | None, ca_file: Path | None, *, plaintext: bool) -> TransportChoice:
    """The TLS rule's choice for a board: a CA file, or plaintext (an ESP32 has no CA store of its own)."""
    if ca_file is None and not plaintext:
        raise ProvisionError(NEEDS_CA)
    return TransportChoice.from_options(broker=broker, ca_file=ca_file, system_ca=False, plaintext=plaintext)


def check_transport(request: FlashRequest) -> None:
    """The board's side of the TLS rule, before anything is asked of the board or the fleet."""
    transport = request.transport
    if transport.system_ca or (not transport.plaintext and transport.ca_pem is None):
        raise ProvisionError(NEEDS_CA)
    if request.offline and request.fleet_url:
        scheme = request.fleet_url.split("://", 1)[0]
        if transport.plaintext and scheme != "http":
            raise ProvisionError("--insecure-plaintext: the board enrolls over plain http:// only "
                                 "(it holds no CA to check an https:// fleet with)")
        if not transport.plaintext and scheme != "https":
            raise ProvisionError(f"--fleet {scheme}://: the board would send its enrollment token readable "
                                 "on the network; give the fleet's https:// URL, or --insecure-plaintext "
                                 "on a lab network")


def check_image(image: FirmwareImage, kind: str) -> None:
    if kind not in image.roles:
        known = ", ".join(sorted(image.roles)) or "none"
        raise FirmwareMismatch(f"firmware {image.version} has no '{kind}' role (it has: {known}); "
                               "use a newer firmware image")


class Flasher:
    """Flashes boards one after another with the same request, image and fleet."""

    def __init__(self, request: FlashRequest, image: FirmwareImage, fleet: FleetClient | None,
                 reporter: Reporter, *, open_board: Callable[[str], BoardLink] = SerialBoard) -> None:
        if not request.offline and fleet is None:
            raise ProvisionError("no fleet to register with: pass --fleet URL, or --offline")
        if request.offline and not request.enrollment_token:
            raise ProvisionError("--offline needs --enrollment-token (a pre-issued enrollment token)")
        if request.offline and request.transport.override is None:
            raise ProvisionError("--offline needs --broker mqtts://HOST:PORT (the fleet cannot tell it)")
        check_transport(request)
        check_image(image, request.kind)
        self.request = request
        self.image = image
        self.fleet = fleet
        self.reporter = reporter
        self.open_board = open_board

    def flash(self, port: str) -> FlashResult:
        started = time.monotonic()
        board = self.open_board(port)
        try:
            info = board.identify()
            self.reporter.info(f"{port}: {info.describe()}")
            interrupted = parse_marker(board.read_file(MARKER))
            reuse = interrupted is not None and interrupted.startswith(f"{self.request.kind}-") \
                and DEVICE_ID_RE.match(interrupted) is not None
            if interrupted is not None:
                self.reporter.info(f"{port}: an earlier flash was interrupted; writing the board again "
                                   "from scratch")
            device_id = interrupted if reuse and interrupted else new_device_id(self.request.kind,
                                                                                self.request.site)
            credentials = None if self.request.offline else self._register(device_id, existing_ok=reuse)
            try:
                written_at = self._write(board, port, device_id, credentials)
                board.reset()
            except ProvisionError as err:
                if credentials is not None:
                    err.message += self._revoke(device_id)
                raise
        finally:
            board.close()
        reset_at = time.monotonic()
        assert self.fleet is not None or self.request.offline
        if self.fleet is None or not self.fleet.can_read:
            return FlashResult(port, device_id, info, self.image.version,
                               "offline" if self.request.offline else "unverified",
                               written_at - started, None, time.monotonic() - started)
        with self.reporter.waiting(f"{port}: waiting for {device_id} to come online",
                                   self.request.wait_s) as tick:
            device = self.fleet.wait_for_birth(device_id, self.request.wait_s, tick=tick)
        if device is None:
            raise NotOnline(f"{port}: {device_id} is written and registered but did not come online "
                            f"within {self.request.wait_s:.0f} s (check wifi and the broker address; "
                            "it keeps trying by itself)")
        now = time.monotonic()
        return FlashResult(port, device_id, info, self.image.version, "online", written_at - started,
                           now - reset_at, now - started)

    def _register(self, device_id: str, *, existing_ok: bool) -> MqttCredentials:
        assert self.fleet is not None
        request = self.request
        if request.enrollment_token:
            return self.fleet.enroll(request.enrollment_token, device_id, request.name or None)
        tags = [request.kind]
        try:
            self.fleet.create_device(device_id, "esp32", name=request.name, ward=request.ward,
                                     site=request.site, tags=tags)
        except ProvisionError as err:
            if not (existing_ok and getattr(err, "status", None) == 409):
                raise
        return self.fleet.issue_credentials(device_id)

    def _revoke(self, device_id: str) -> str:
        """Undo issued credentials; returns what to add to the error message."""
        assert self.fleet is not None
        try:
            self.fleet.revoke_credentials(device_id)
        except ProvisionError as err:
            return (f"; the credentials issued for {device_id} could not be revoked "
                    f"({err.message}): ask the operations team to revoke them")
        return f"; the credentials issued for {device_id} were revoked"

    def _config(self, device_id: str, credentials: MqttCredentials | None) -> bytes:
        request = self.request
        transport = request.transport
        plaintext = transport.plaintext
        if credentials is None:
            assert transport.override is not None
            broker = transport.override
            return board_config(device_id, broker.host, broker.port, [request.kind],
                                enrollment_token=request.enrollment_token, fleet_url=request.fleet_url,
                                wifi_ssid=request.wifi_ssid, wifi_password=request.wifi_password,
                                insecure_plaintext=plaintext)
        broker = transport.resolve(BrokerAddress(credentials.host, credentials.port, credentials.tls))
        return board_config(device_id, broker.host, broker.port, [request.kind], username=credentials.username,
                            password=credentials.password, wifi_ssid=request.wifi_ssid,
                            wifi_password=request.wifi_password, insecure_plaintext=plaintext)

    def _write(self, board: BoardLink, port: str, device_id: str,
               credentials: MqttCredentials | None) -> float:
        """Marker, wipe, files, config, boot stage, check, manifest, marker removed."""
        image = self.image
        config = self._config(device_id, credentials)
        pem = self.request.transport.ca_pem
        ca = None if pem is None else board_ca(pem)
        own = {CONFIG: config} if ca is None else {CONFIG: config, CA_FILE: ca}
        written = [*image.app_files(), *own, BOOT_STAGE]
        with self.reporter.transfer(f"{port}: writing firmware {image.version}",
                                    image.size + sum(len(data) for data in own.values())) as advance:
            board.write_file(MARKER, marker(device_id))
            board.run(rm_tree_code([BOOT_STAGE]))  # first: a half-written board must not boot
            board.run(rm_tree_code(WIPE))
            board.run(mkdirs_code(image.dirs()))
            for path in image.app_files():
                board.write_file(path, image.files[path], advance)
            for path, data in own.items():
                board.write_file(path, data, advance)
            board.write_file(BOOT_STAGE, image.files[BOOT_STAGE], advance)
        expected = [sha256(own[p] if p in own else image.files[p]) for p in written]
        found = board.run(hashes_code(written)).split()
        for path, want, got in zip(written, expected, found + ["-"] * len(written), strict=False):
            if want != got:
                raise ProvisionError(f"{port}: {path} on the board is not what was written "
                                     "(flash full or failing?); run again to re-flash it")
        board.write_file(MANIFEST, manifest(device_id, image, config, ca))
        board.run(rm_tree_code([MARKER]))
        return time.monotonic()
