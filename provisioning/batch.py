"""The offline batch day: a folder made at the depot, used in the field with no link to the fleet.

`provision batch prepare` (at the depot, with an ops API token) makes one enrollment token per
board, each bound to a device id made now (docs/identity.md: a bound token enrolls exactly that
id), and writes everything a technician carries into one folder:

    batch.json          the template: kind, site, ward, broker, the URL the boards enrol at,
                        TLS or plaintext, the firmware version, the entries' count
    ca.pem              the CA the boards check the broker and the fleet against (TLS batches)
    firmware/           the image as flashed (precompiled), firmware.json lists its files' SHA-256
    entries/NNN.json    one board each: its device id and enrollment token (0600)
    used/NNN.json       written when an entry is taken (below)
    labels.pdf          the labels of all entries, in entry order (A4, 27 a page)
    labels/ID.png       the same, one PNG a board

`provision flash --batch DIR` (in the field) takes the lowest entry without a `used/` file. The
entry is claimed before anything is written to the board: `used/NNN.json` is created with
O_CREAT|O_EXCL and fsynced with its folder, so a flash cut at any point (cable, power, Ctrl-C,
a crash of the tool) has already spent its entry, and two tools on one folder never take the same
one. A failed flash leaves its entry spent (its token, if it reached no board, expires unused, or
ops revoke it: the failure line says which). Bound: a batch has at most MAX_BATCH entries; a
folder with none left is refused in one line ("prepare another batch").
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.errors import ProvisionError
from provisioning.fleet_api import FleetClient
from provisioning.identity import new_device_id
from provisioning.image import FirmwareImage, sha256
from provisioning.labels import Label, make_label, save_png, save_sheet

MAX_BATCH = 500  # a day's boards, with room; more is a mistake in --count
FORMAT = 1
BATCH_FILE = "batch.json"
CA_NAME = "ca.pem"
FIRMWARE_DIR = "firmware"
FIRMWARE_LIST = "firmware.json"
ENTRIES, USED = "entries", "used"
SHEET = "labels.pdf"
LABELS = "labels"


@dataclass(frozen=True)
class BatchPlan:
    """What `provision batch prepare` was asked for."""

    count: int
    kind: str
    site: str
    ward: str
    broker: str  # mqtts://HOST:PORT (or mqtt:// with insecure_plaintext)
    enroll_url: str  # where the boards enrol (the fleet's https:// URL as the boards reach it)
    public_url: str  # what the labels' QR codes open
    ca_pem: str | None
    insecure_plaintext: bool
    ttl_hours: int = 72
    wifi_ssid: str | None = None
    wifi_password: str | None = None


@dataclass(frozen=True)
class Entry:
    number: int
    device_id: str
    token: str

    @property
    def name(self) -> str:
        return f"{self.number:03d}"


def _write_private(path: Path, data: bytes) -> None:
    """A new file, readable by its owner only, on disk before this returns."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fresh_ids(fleet: FleetClient, plan: BatchPlan) -> Iterator[str]:
    """New ids the fleet has never seen: a token bound to an existing id would re-provision it."""
    made: set[str] = set()
    while True:
        for _ in range(20):
            device_id = new_device_id(plan.kind, plan.site)
            if device_id not in made and fleet.find_device(device_id) is None:
                made.add(device_id)
                yield device_id
                break
        else:
            raise ProvisionError(f"could not find a free device id for site {plan.site!r} in 20 tries")


def prepare(plan: BatchPlan, out: Path, fleet: FleetClient, image: FirmwareImage) -> list[Entry]:
    """Make the batch folder `out` (new or empty). On any failure the folder is removed and the
    tokens made so far are revoked, so nothing half-made is carried into the field."""
    if not 1 <= plan.count <= MAX_BATCH:
        raise ProvisionError(f"--count must be 1 to {MAX_BATCH}")
    if not fleet.can_read:
        raise ProvisionError("batch prepare makes enrollment tokens: it needs an ops API token (--token)")
    if plan.kind not in image.roles:
        raise ProvisionError(f"firmware {image.version} has no '{plan.kind}' role")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProvisionError(f"{out} is not an empty folder: a batch folder is made new (an older batch's "
                             "entries would be mixed in)")
    ids = _fresh_ids(fleet, plan)
    device_ids = [next(ids) for _ in range(plan.count)]  # reads only: a wrong token stops here
    made = not out.exists()
    tokens: list[int] = []
    try:
        return _write_batch(plan, out, fleet, image, device_ids, tokens)
    except BaseException as err:
        revoked = _revoke(fleet, tokens)
        if made:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():  # it was given empty: leave it empty
            for path in out.iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()
        if isinstance(err, ProvisionError) and tokens:
            err.message += f"; the batch folder was removed and {revoked} of {len(tokens)} tokens made were revoked"
        raise


def _revoke(fleet: FleetClient, tokens: list[int]) -> int:
    revoked = 0
    for token_id in tokens:
        try:
            fleet.revoke_enrollment_token(token_id)
            revoked += 1
        except ProvisionError:
            pass
    return revoked


def _write_batch(plan: BatchPlan, out: Path, fleet: FleetClient, image: FirmwareImage, device_ids: list[str],
                 tokens: list[int]) -> list[Entry]:
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # it holds enrollment tokens
    for sub in (FIRMWARE_DIR, ENTRIES, USED, LABELS):
        (out / sub).mkdir()
    for path, data in image.files.items():
        target = out / FIRMWARE_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    listing = {"version": image.version, "roles": sorted(image.roles),
               "files": {path: sha256(data) for path, data in sorted(image.files.items())}}
    (out / FIRMWARE_DIR / FIRMWARE_LIST).write_text(json.dumps(listing, indent=1) + "\n")
    if plan.ca_pem is not None:
        (out / CA_NAME).write_text(plan.ca_pem)
    today = datetime.date.today()
    entries: list[Entry] = []
    for number, device_id in enumerate(device_ids, start=1):
        token_id, token = fleet.create_enrollment_token("esp32", plan.site, ward=plan.ward, device_id=device_id,
                                                        ttl_hours=plan.ttl_hours)
        tokens.append(token_id)
        entry = Entry(number, device_id, token)
        _write_private(out / ENTRIES / f"{entry.name}.json",
                       json.dumps({"number": number, "device_id": device_id, "token": token}).encode())
        entries.append(entry)
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=plan.ttl_hours)).isoformat(
        timespec="seconds")
    template: dict[str, Any] = {
        "format": FORMAT, "count": plan.count, "kind": plan.kind, "site": plan.site, "ward": plan.ward,
        "broker": plan.broker, "enroll_url": plan.enroll_url, "public_url": plan.public_url,
        "ca_file": CA_NAME if plan.ca_pem is not None else None, "insecure_plaintext": plan.insecure_plaintext,
        "firmware": image.version, "prepared": today.isoformat(), "tokens_expire": expires,
    }
    if plan.wifi_ssid is not None:
        template.update(wifi_ssid=plan.wifi_ssid, wifi_password=plan.wifi_password)
    _write_private(out / BATCH_FILE, (json.dumps(template, indent=1) + "\n").encode())
    labels = [entry_label(template, entry, today) for entry in entries]
    for label in labels:
        save_png(label, out / LABELS / f"{label.device_id}.png")
    save_sheet(labels, out / SHEET)
    return entries


def entry_label(template: dict[str, Any], entry: Entry, date: datetime.date | None = None) -> Label:
    return make_label(str(template["public_url"]), entry.device_id, ward=str(template.get("ward") or ""),
                      date=date)


@dataclass
class BatchFolder:
    """A prepared batch in the field: its template, firmware and entries."""

    root: Path
    template: dict[str, Any]

    @classmethod
    def open(cls, root: Path) -> BatchFolder:
        try:
            template = json.loads((root / BATCH_FILE).read_text())
        except FileNotFoundError as err:
            raise ProvisionError(f"{root} is not a batch folder (no {BATCH_FILE}): make one with "
                                 "provision batch prepare") from err
        except (OSError, ValueError) as err:
            raise ProvisionError(f"{root / BATCH_FILE} cannot be read: {err}") from err
        if not isinstance(template, dict) or template.get("format") != FORMAT:
            raise ProvisionError(f"{root / BATCH_FILE}: not a batch this tool knows (format {FORMAT})")
        return cls(root, template)

    @property
    def ca_file(self) -> Path | None:
        name = self.template.get("ca_file")
        return None if not name else self.root / str(name)

    def firmware(self) -> FirmwareImage:
        """The image as prepared, every file checked against firmware.json."""
        folder = self.root / FIRMWARE_DIR
        try:
            listing = json.loads((folder / FIRMWARE_LIST).read_text())
            files = {path: (folder / path).read_bytes() for path in listing["files"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ProvisionError(f"the batch's firmware cannot be read ({err}); prepare the batch again") from err
        for path, digest in listing["files"].items():
            if sha256(files[path]) != digest:
                raise ProvisionError(f"the batch's firmware file {path} is damaged (its SHA-256 differs); "
                                     "prepare the batch again")
        return FirmwareImage(files=files, version=str(listing["version"]), roles=frozenset(listing["roles"]))

    def entries(self) -> list[Entry]:
        out = []
        for path in sorted((self.root / ENTRIES).glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                out.append(Entry(int(raw["number"]), str(raw["device_id"]), str(raw["token"])))
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ProvisionError(f"{path} cannot be read: {err}") from err
        return out

    def used(self) -> set[str]:
        return {path.stem for path in (self.root / USED).glob("*.json")}

    def remaining(self) -> int:
        used = self.used()
        return sum(1 for entry in self.entries() if entry.name not in used)

    def claim(self, port: str) -> Entry:
        """The next unused entry, marked used on disk before it is returned (see the module's doc)."""
        record = json.dumps({"port": port, "claimed_at": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"), "result": None}).encode()
        for entry in self.entries():
            try:
                _write_private(self.root / USED / f"{entry.name}.json", record)
            except FileExistsError:
                continue
            _fsync_dir(self.root / USED)
            return entry
        raise ProvisionError(f"the batch in {self.root} has no unused entry left: prepare another batch")

    def record(self, entry: Entry, result: str) -> None:
        """What became of a claimed entry (the flash's result or failure line), replacing the claim."""
        path = self.root / USED / f"{entry.name}.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        raw["result"] = result
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        _write_private(tmp, json.dumps(raw).encode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def label(self, entry: Entry) -> Label:
        return entry_label(self.template, entry)

