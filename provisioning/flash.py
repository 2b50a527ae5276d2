"""Flashing one ESP32: check the board, decide its identity, write it, reset it, see it come online.

The order is chosen so that a failure leaves the board as it was, or says exactly what it is:
- the board is checked (MicroPython answers) and read (its identity, counters, an interrupted
  earlier flash) before the fleet is asked for anything; the fleet is then asked (a read, no
  change) whether it knows the id, so a wrong token or an unreachable fleet changes nothing;
- the new firmware is staged beside the running one (`provisioning.staging`); only then are the
  device registered and credentials issued, so the long copy is over before the board's old
  credentials stop working (issuing new ones revokes them);
- config.json (with the new credentials) is staged last, every file checked, and one script on
  the board switches to the new files;
- on a failure with the board still answering, the staged files go, the board is reset into its
  previous firmware, and credentials that no board holds are revoked (a board that kept its
  identity gets the new credentials in its previous config.json instead: its old ones are gone).
  With the board gone (cable, power), the message says what is on it.

Transport (provisioning.broker_tls, the same rule as `pi-bundle`): the board speaks TLS to its
broker and its fleet and checks their certificates against the CA file it is given (`ca.der` on
the board; an ESP32 has no store of its own); plaintext only with `--insecure-plaintext` (a lab
network). What the fleet says of its broker (`tls` in the credentials) must agree: a plaintext
board would send its password readable to a TLS port, a TLS board could never connect to a
plaintext one. A disagreement is refused before the board is switched.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.board import BoardInfo, BoardLink, SerialBoard
from provisioning.broker_tls import BrokerAddress, TransportChoice
from provisioning.errors import (
    BoardStoppedAnswering,
    FirmwareMismatch,
    FleetRefused,
    Interrupted,
    NoBootloader,
    NotMicroPython,
    NotOnline,
    ProvisionError,
)
from provisioning.fleet_api import FleetClient, MqttCredentials
from provisioning.identity import IdentityPlan, choose_identity
from provisioning.image import (
    BOOT_STAGE,
    CA_FILE,
    CONFIG,
    MANIFEST,
    MARKER,
    OTA_KEYS,
    FirmwareImage,
    board_ca,
    board_config,
    manifest,
    marker,
    rm_tree_code,
    sha256,
)
from provisioning.micropython_image import DEFAULT_MANIFEST, ImageManifest, MicroPythonImage, read_image
from provisioning.progress import Reporter
from provisioning.rom_flash import BlankBoardWriter
from provisioning.staging import STATE, BoardFiles, Staging, replace_file, roll_back, survey

ESP32_KINDS = ("light", "speaker", "sensor")
# `sim` is the simulated sensor every firmware has: for demos and tests, not for the field.
ALL_KINDS = (*ESP32_KINDS, "sim")


@dataclass(frozen=True)
class FlashRequest:
    kind: str
    site: str | None  # needed only when a new device id is made (it is part of the id)
    transport: TransportChoice  # --broker (overrides what the fleet says), --ca-file, --insecure-plaintext
    name: str = ""
    ward: str = ""
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    enrollment_token: str | None = None
    offline: bool = False
    fleet_url: str | None = None  # written for self-enrollment in offline mode
    wait_s: float = 60.0
    new_identity: bool = False  # --new-identity: a new device id even if the board has one
    device_id: str | None = None  # --device-id: this id, whatever the board has
    ota_keys: bytes | None = None  # --ota-keys: ota_keys.json, the release keys the board trusts


@dataclass(frozen=True)
class BlankBoards:
    """What `flash` writes onto a board that has no MicroPython (docs/provisioning.md, "Blank boards")."""

    manifest: Path = DEFAULT_MANIFEST
    image: str | None = None  # the manifest's entry; None: its `default`
    image_dir: Path | None = None  # where `file` entries are; None: the manifest's folder
    fleet_url: str | None = None  # relative `url` entries are on the fleet
    baud: int = 460800  # after SYNC at 115200, the ROM is asked to switch
    boot_wait_s: float = 30.0  # how long MicroPython may take to show its REPL after the write
    http_timeout: float = 30.0


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
    identity: str = ""  # what happened to the board's identity (and the fleet's records)
    micropython: str = ""  # a blank board: what was written onto it first

    def line(self) -> str:
        state = {"online": "online",
                 "offline": "written (offline: it enrolls on first connect)",
                 "unverified": "written and enrolled (not verified: no API token to ask the fleet)"}
        timing = f"written in {self.write_s:.1f} s"
        if self.online_after_s is not None:
            timing += f", online {self.online_after_s:.1f} s after reset"
        identity = f"; {self.identity}" if self.identity else ""
        blank = f"; {self.micropython}" if self.micropython else ""
        return (f"ok {self.port} {self.device_id} {state[self.status]}: {self.board.describe()}, "
                f"fw {self.fw}; {timing}; total {self.total_s:.1f} s{blank}{identity}")


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


@dataclass
class _Attempt:
    """How far one board got: what a failure has to undo, and what its message must say."""

    files: BoardFiles | None = None
    plan: IdentityPlan | None = None
    staged: bool = False  # provision.new/ and the marker were begun
    created: bool = False  # this run registered the device id
    credentials: MqttCredentials | None = None
    switching: bool = False
    switched: bool = False

    @property
    def rotated(self) -> bool:
        """The credentials replaced the ones the board itself holds (it kept its identity)."""
        return self.credentials is not None and self.plan is not None and not self.plan.changes


class Flasher:
    """Flashes boards one after another with the same request, image and fleet."""

    def __init__(self, request: FlashRequest, image: FirmwareImage, fleet: FleetClient | None,
                 reporter: Reporter, *, open_board: Callable[[str], BoardLink] = SerialBoard,
                 blank: BlankBoards | None = None) -> None:
        if not request.offline and fleet is None:
            raise ProvisionError("no fleet to register with: pass --fleet URL, or --offline")
        if request.offline and not request.enrollment_token:
            raise ProvisionError("--offline needs --enrollment-token (a pre-issued enrollment token)")
        if request.offline and request.transport.override is None:
            raise ProvisionError("--offline needs --broker mqtts://HOST:PORT (the fleet cannot tell it)")
        if request.new_identity and request.device_id:
            raise ProvisionError("--new-identity and --device-id: give one (--device-id names the new identity)")
        check_transport(request)
        check_image(image, request.kind)
        self.request = request
        self.image = image
        self.fleet = fleet
        self.reporter = reporter
        self.open_board = open_board
        self.blank = blank
        self._micropython: tuple[MicroPythonImage, bytes] | None = None  # read and checked once per run

    def flash(self, port: str) -> FlashResult:
        started = time.monotonic()
        with contextlib.ExitStack() as job:  # a blank board's one progress bar, until the firmware is on it
            board, info, micropython = self._board(port, job)
            return self._flash(port, board, info, started, job, micropython)

    def _flash(self, port: str, board: BoardLink, info: BoardInfo, started: float, job: contextlib.ExitStack,
               micropython: str) -> FlashResult:
        attempt = _Attempt()
        try:
            self.reporter.info(f"{port}: {info.describe()}")
            try:
                self._write(board, port, attempt)
                written_at = time.monotonic()
                board.reset()
            except ProvisionError as err:
                raise self._failed(board, port, attempt, err) from None
            except KeyboardInterrupt:
                raise self._failed(board, port, attempt, Interrupted(f"{port}: interrupted")) from None
        finally:
            board.close()
            job.close()
        reset_at = time.monotonic()
        assert attempt.plan is not None
        plan = attempt.plan
        notes = self._after_switch(plan)
        identity = plan.describe() + (": " + "; ".join(notes) if notes else "")
        if self.fleet is None or not self.fleet.can_read:
            return FlashResult(port, plan.device_id, info, self.image.version,
                               "offline" if self.request.offline else "unverified",
                               written_at - started, None, time.monotonic() - started, identity, micropython)
        with self.reporter.waiting(f"{port}: waiting for {plan.device_id} to come online",
                                   self.request.wait_s) as tick:
            device = self.fleet.wait_for_birth(plan.device_id, self.request.wait_s, tick=tick)
        if device is None:
            raise NotOnline(f"{port}: {plan.device_id} is written and registered but did not come online "
                            f"within {self.request.wait_s:.0f} s (check wifi and the broker address; "
                            f"it keeps trying by itself); {identity}")
        now = time.monotonic()
        return FlashResult(port, plan.device_id, info, self.image.version, "online", written_at - started,
                           now - reset_at, now - started, identity, micropython)

    # a blank board ---------------------------------------------------------------------------
    def _board(self, port: str, job: contextlib.ExitStack) -> tuple[BoardLink, BoardInfo, str]:
        """The board's MicroPython REPL; on a blank board, MicroPython written first (one bar for
        all of the job, entered on `job`). Returns the board, what it is, and what was written."""
        board = self.open_board(port)
        try:
            return board, board.identify(), ""
        except NotMicroPython as err:
            board.close()
            if self.blank is None:
                raise
            no_repl = err
        except BaseException:
            board.close()
            raise
        blank = self.blank
        started = time.monotonic()
        with BlankBoardWriter(port, baud=blank.baud) as writer:
            try:
                chip = writer.connect()
            except NoBootloader as err:  # neither MicroPython nor a ROM: say both
                raise NoBootloader(f"{no_repl.message}; {err.message}") from err
            self.reporter.info(f"{port}: no MicroPython REPL; the ROM bootloader of an {chip} answers: a blank board")
            image, data = self._micropython_image()
            size = writer.check(image, data)
            self.reporter.info(f"{port}: {image.describe()}, {len(data):,} bytes at {image.offset:#x}, SHA-256 "
                               f"checked; flash {'unknown' if size is None else f'{size >> 20} MB'}")
            job.enter_context(self.reporter.job(f"{port}: blank board", len(data) + self._firmware_bytes()))
            with self.reporter.transfer(f"{port}: erasing, writing, verifying {image.describe()}",
                                        len(data)) as advance:
                writer.write(image, data, advance)
        written = time.monotonic() - started
        self.reporter.info(f"{port}: MicroPython written and its MD5 verified in {written:.1f} s; "
                           "waiting for it to boot")
        board, info = self._after_boot(port)
        return board, info, (f"blank board: MicroPython {image.micropython} written and verified in "
                             f"{written:.1f} s")

    def _micropython_image(self) -> tuple[MicroPythonImage, bytes]:
        if self._micropython is None:
            assert self.blank is not None
            blank = self.blank
            image = ImageManifest.load(blank.manifest).choose(blank.image)
            data = read_image(image, image_dir=blank.image_dir or blank.manifest.parent,
                              fleet_url=blank.fleet_url, timeout=blank.http_timeout)
            self._micropython = (image, data)
        return self._micropython

    def _firmware_bytes(self) -> int:
        pem = self.request.transport.ca_pem
        return self.image.size + (0 if pem is None else len(board_ca(pem))) + len(self.request.ota_keys or b"")

    def _after_boot(self, port: str) -> tuple[BoardLink, BoardInfo]:
        """The freshly written MicroPython's REPL (its first boot makes its filesystem)."""
        assert self.blank is not None
        deadline = time.monotonic() + self.blank.boot_wait_s
        while True:
            board = self.open_board(port)
            try:
                return board, board.identify()
            except NotMicroPython as err:
                board.close()
                if time.monotonic() >= deadline:
                    raise NotMicroPython(f"{port}: MicroPython was written and verified, but shows no REPL "
                                         f"{self.blank.boot_wait_s:.0f} s later ({err.message})") from err
            except BaseException:
                board.close()
                raise
            time.sleep(0.5)

    # the steps -------------------------------------------------------------------------------
    def _write(self, board: BoardLink, port: str, attempt: _Attempt) -> None:
        """Read the board, decide its identity, stage, register, stage its config, check, switch."""
        request = self.request
        files = attempt.files = survey(board)
        if files.interrupted_switch or files.leftovers:
            undone = roll_back(board)
            self.reporter.info(f"{port}: an earlier flash was interrupted"
                               + (" while switching; its previous files were put back" if undone else "")
                               + "; its partial copy was removed")
            files = attempt.files = survey(board)
        plan = attempt.plan = choose_identity(port, files, kind=request.kind, site=request.site,
                                              new_identity=request.new_identity, device_id=request.device_id)
        self.reporter.info(f"{port}: flashing {plan.device_id} ({plan.describe()})")
        image = self.image
        pem = request.transport.ca_pem
        ca = None if pem is None else board_ca(pem)
        record = self._look_up(plan)
        with self.reporter.transfer(f"{port}: writing firmware {image.version}",
                                    image.size + (len(ca) if ca else 0) + len(request.ota_keys or b"")) as advance:
            board.write_file(MARKER, marker(plan.device_id))
            attempt.staged = True
            staging = Staging(board, image.dirs())
            for path in [*image.app_files(), BOOT_STAGE]:
                data = image.files[path]
                staging.write(path, data, sha256(data), advance)
            if ca is not None:
                staging.write(CA_FILE, ca, sha256(ca), advance)
            if request.ota_keys is not None:
                staging.write(OTA_KEYS, request.ota_keys, sha256(request.ota_keys), advance)
        credentials = self._register(plan, record, attempt)
        config = self._config(plan.device_id, credentials)
        staging.write(CONFIG, config, sha256(config))
        state = self._counters(files, plan, record)
        if state is not None:
            staging.write(STATE, state, sha256(state))
        listing = manifest(plan.device_id, image, config, ca, request.ota_keys)
        staging.write(MANIFEST, listing, sha256(listing))
        staging.check()
        attempt.switching = True
        staging.switch(identity_changes=plan.changes)
        attempt.switched = True
        staging.finish()

    def _look_up(self, plan: IdentityPlan) -> dict[str, Any] | None:
        """Ask the fleet (a read: nothing changes) what it knows of the id; refuse what cannot work.

        Run before the board is written, so a wrong API token or an unreachable fleet changes
        nothing. With an enrollment token only (or offline) the fleet cannot be asked.
        """
        if self.fleet is None or not self.fleet.can_read:
            return None
        record = self.fleet.find_device(plan.device_id)
        if record is None:
            return None
        if plan.how == "new":  # the made-up id is taken (4 hex digits of chance): say so, change nothing
            raise FleetRefused(f"the new id {plan.device_id} is taken in the fleet; run again for another one",
                               status=409)
        if record.get("status") == "decommissioned":
            raise FleetRefused(f"{plan.device_id} is decommissioned in the fleet; flash the board with "
                               "--new-identity to give it a new one", status=409)
        if record.get("kind") not in (None, "esp32"):
            raise FleetRefused(f"{plan.device_id} is a {record.get('kind')} in the fleet, not an ESP32; "
                               "flash the board with --new-identity or another --device-id", status=409)
        return record

    def _register(self, plan: IdentityPlan, record: dict[str, Any] | None,
                  attempt: _Attempt) -> MqttCredentials | None:
        """Register the id if the fleet lacks it and issue credentials (which revokes older ones)."""
        request = self.request
        if request.offline:
            return None
        assert self.fleet is not None
        if request.enrollment_token:
            credentials = self.fleet.enroll(request.enrollment_token, plan.device_id, request.name or None)
        else:
            if record is None:
                try:
                    self.fleet.create_device(plan.device_id, "esp32", name=request.name, ward=request.ward,
                                             site=request.site or "", tags=[request.kind])
                    attempt.created = True
                except FleetRefused as err:  # an interrupted run of this flash registered it already
                    if not (plan.how == "continued" and err.status == 409):
                        raise
            credentials = self.fleet.issue_credentials(plan.device_id)
        attempt.credentials = credentials
        return credentials

    def _counters(self, files: BoardFiles, plan: IdentityPlan, record: dict[str, Any] | None) -> bytes | None:
        """state.json to stage, if the board's stream counter must move up; None to keep the board's.

        A stream number must never be used twice for one device id. The board's own counter is
        kept with its identity; when the fleet has seen a higher session for the id (a board that
        takes over the id of one it replaces, or one whose state.json was lost), the counter starts
        above it.
        """
        seen = (record or {}).get("session")
        if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
            return None
        own = None if plan.changes else files.session
        if own is not None and own >= seen:
            return None
        boots = (files.state or {}).get("boots", 0) if not plan.changes else 0
        return json.dumps({"boots": boots if isinstance(boots, int) else 0, "ses": seen}).encode()

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

    def _after_switch(self, plan: IdentityPlan) -> list[str]:
        """The fleet's records once the board holds its new files: what is said in the result line."""
        notes: list[str] = []
        request = self.request
        can_change = self.fleet is not None and self.fleet.can_read and not request.offline
        if plan.how == "kept" and not plan.changes:
            notes.append("new credentials, the old ones revoked" if not request.offline
                         else "it enrolls with the token on first connect (the token must be issued for this id)")
        if can_change and plan.how in ("kept", "assigned"):
            notes.extend(self._update_record(plan.device_id))
        previous = plan.previous
        if previous is not None and plan.changes:
            if can_change:
                notes.append(self._retire(previous))
            else:
                notes.append(f"its previous identity {previous} keeps its credentials in the fleet: ask ops "
                             "to revoke them or decommission it")
        return notes

    def _update_record(self, device_id: str) -> list[str]:
        assert self.fleet is not None
        request = self.request
        try:
            record = self.fleet.get_device(device_id)
            given = {"site": request.site or "", "ward": request.ward, "name": request.name}
            changes = {k: v for k, v in given.items() if v and record.get(k) != v}
            if not changes:
                return []
            self.fleet.update_device(device_id, changes)
        except ProvisionError as err:
            return [f"its record was not updated ({err.message})"]
        return [f"record updated: {', '.join(sorted(changes))}"]

    def _retire(self, previous: str) -> str:
        """The board no longer holds its previous identity's credentials: revoke them."""
        assert self.fleet is not None
        try:
            if self.fleet.find_device(previous) is None:
                return f"its previous identity {previous} is unknown to this fleet"
            self.fleet.revoke_credentials(previous)
        except ProvisionError as err:
            return (f"its previous identity {previous} keeps its credentials ({err.message}): ask ops to "
                    "revoke them")
        return (f"{previous}'s credentials revoked, its record kept with its history "
                "(ops may decommission it)")

    # failures --------------------------------------------------------------------------------
    def _failed(self, board: BoardLink, port: str, attempt: _Attempt, err: ProvisionError) -> ProvisionError:
        """Put the board back if it still answers; say in the one line what the board and the fleet hold."""
        plan = attempt.plan
        answering = not isinstance(err, BoardStoppedAnswering)
        if answering and isinstance(err, Interrupted):
            answering = self._resync(board)
        credentials_kept = attempt.switched
        if attempt.switched:
            board_said = f"the new firmware is in place as {plan.device_id if plan else '?'}"
            if not answering:
                board_said += "; power-cycle the board to start it"
        else:
            if answering and attempt.staged:
                try:
                    roll_back(board)
                    if not (attempt.created and plan is not None and plan.fresh):
                        board.run(rm_tree_code([MARKER]))
                    if attempt.rotated:
                        credentials_kept = self._give_new_credentials(board, attempt)
                except ProvisionError:
                    answering = False
            board_said = self._previous(attempt, answering, credentials_kept)
        if answering:
            board_said += self._reset_after_failure(board, attempt)
        fleet_said = "" if credentials_kept else self._withdraw(attempt)
        err.message = "; ".join(part for part in (err.message, board_said, fleet_said) if part)
        return err

    def _resync(self, board: BoardLink) -> bool:
        """After Ctrl-C in the middle of an exchange: back to a clean raw REPL."""
        try:
            board.identify()
        except (ProvisionError, KeyboardInterrupt):
            return False
        return True

    def _previous(self, attempt: _Attempt, answering: bool, credentials_kept: bool) -> str:
        """What the board holds after a failure before the switch."""
        files, plan = attempt.files, attempt.plan
        previous = files.device_id if files is not None else None
        if files is not None and not files.has_firmware:
            held = "it has no firmware, as before"
        else:
            held = "its previous firmware" + (f" and identity {previous}" if previous else "")
        if attempt.switching and not answering:
            return ("the board stopped during the switch to the new files: run the same command again, which "
                    "first puts its previous files back (until then it may not boot)")
        if not answering:
            said = "the board keeps " + held
            if attempt.staged:
                said += " (the partial copy in provision.new/ is removed by the next flash)"
            if attempt.rotated:
                said += ", but its old credentials were replaced: it cannot connect until it is flashed again"
            elif files is not None and files.has_firmware:
                said += "; unplug and plug it in to run it"
            if plan is not None and plan.fresh and attempt.staged:
                said += f"; the same command continues with {plan.device_id}"
            return said
        if not attempt.staged:
            return "the board was not changed: " + held
        said = "the board was put back as it was: " + held
        if attempt.rotated:
            said += (", with the new credentials in its config.json (the old ones were revoked)" if credentials_kept
                     else ", but its old credentials were revoked and the new ones could not be written: "
                          "it cannot connect until it is flashed again")
        return said

    def _reset_after_failure(self, board: BoardLink, attempt: _Attempt) -> str:
        """Out of the raw REPL: the board boots what it holds, as after power-on."""
        try:
            board.reset()
        except ProvisionError:
            return "; it did not answer the reset: unplug and plug it in"
        if attempt.switched:
            return "; it was reset into it"
        if attempt.files is not None and not attempt.files.has_firmware:
            return ""
        return "; it was reset and runs it again"

    def _give_new_credentials(self, board: BoardLink, attempt: _Attempt) -> bool:
        """The board kept its identity but its old password was revoked: put the new one into its
        previous config.json (nothing else changes). True if written."""
        files, credentials = attempt.files, attempt.credentials
        if files is None or files.config is None or credentials is None:
            return False
        config = {k: v for k, v in files.config.items() if k not in ("enrollment_token", "fleet_url")}
        config.update(username=credentials.username, password=credentials.password)
        replace_file(board, CONFIG, (json.dumps(config, indent=1) + "\n").encode())
        return True

    def _withdraw(self, attempt: _Attempt) -> str:
        """Credentials issued by this attempt that no board holds: revoked (API token) or reported."""
        credentials, plan = attempt.credentials, attempt.plan
        if credentials is None or plan is None:
            return ""
        device_id = plan.device_id
        if self.fleet is None or not self.fleet.can_read:
            return (f"the credentials the enrollment token gave {device_id} are on no board: ask ops to revoke "
                    "them")
        try:
            self.fleet.revoke_credentials(device_id)
        except ProvisionError as err:
            return (f"the credentials issued for {device_id} could not be revoked ({err.message}): ask the "
                    "operations team to revoke them")
        return f"the credentials issued for {device_id} were revoked"
