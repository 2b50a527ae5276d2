"""Bytes a device downloads for a patch release: the fleet's bsdiff4 delta (Pi) and the changed slot files (ESP32).

    .venv/bin/python benchmarks/ota_delta.py [--roles sensor,speaker] [--keep DIR]

A patch release here is what a one-line fix is: two copies of this project's source, the second
with VERSION's patch number raised and one line of code changed (the Pi: `STOP_ATTEMPTS` in
edge/agent.py; the ESP32: `RECENT` in firmware/app_a/commands.py).

Pi: the wheel set of the first copy is made as `provision pi-bundle` makes it
(provisioning.wheels.write_wheel_set: the edge agent's and the contract's wheels built from the
source, their dependencies from the index, for the roles given). Two second artifacts are made
from it: (a) only the ioc-edge wheel rebuilt from the second copy, every other wheel the same
file; (b) the contract's wheel rebuilt too (both read VERSION: a real patch release changes both).
Each artifact is `ioc-edge-<version>.tar` as `provision release build --kind pi` writes it
(provisioning.release.write_pi_artifact), the delta the one the fleet computes on publish
(fleet.ota.releases), checked by patching the old artifact into the new one (bsdiff4.patch and
the Pi's own edge/bspatch.py when present).

ESP32: each copy's slot is built by `provision release build --kind esp32` (mpy-cross); a device
downloads only the files whose SHA-256 changed (docs/ota.md: files present with the right hash
are kept). Printed: files changed of all, bytes of the changed files against the whole slot.
"""

import argparse
import hashlib
import io
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bsdiff4

from fleet.ota.releases import DELTA_MAX_RATIO, _diff
from provisioning import release as release_tool
from provisioning.wheels import EDGE_SOURCES, WheelTarget, build_edge_wheels, write_wheel_set

ROOT = Path(__file__).resolve().parents[1]
PI_LINE = (Path("edge/agent.py"), re.compile(r"^STOP_ATTEMPTS = (\d+)", re.M))
ESP32_LINE = (Path("firmware/app_a/commands.py"), re.compile(r"^RECENT = (\d+)", re.M))


def bump_patch(version: str) -> str:
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def change_one_line(path: Path, pattern: re.Pattern[str]) -> str:
    """Raise the number on the first line `pattern` finds by one; return the new line."""
    text = path.read_text()
    found = pattern.search(text)
    if found is None:
        raise SystemExit(f"ota_delta: {path}: the line to change is not there any more ({pattern.pattern})")
    line = found[0].replace(found[1], str(int(found[1]) + 1))
    path.write_text(text[:found.start()] + line + text[found.end():])
    return line


def source_copy(dest: Path, version: str, items: tuple[str, ...], change: tuple[Path, re.Pattern[str]] | None
                ) -> str:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.mpy")
    for item in items:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, dest / item, ignore=ignore)
        else:
            shutil.copy2(source, dest / item)
    (dest / "VERSION").write_text(version + "\n")
    return change_one_line(dest / change[0], change[1]) if change else ""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def pi_delta(base: bytes, new: bytes, label: str) -> bool:
    started = time.perf_counter()
    patch = _diff(base, new)
    made_s = time.perf_counter() - started
    ok = bsdiff4.patch(base, patch) == new
    pure = ""
    try:
        from edge import bspatch  # the Pi's own patcher (pure Python), when it is there
    except ImportError:
        bspatch = None
    if bspatch is not None:
        out = io.BytesIO()
        started = time.perf_counter()
        bspatch.apply_patch(io.BytesIO(base), io.BytesIO(patch), out, max_size=len(new))
        same = out.getvalue() == new
        pure = (f", edge/bspatch.py gives {'the same file' if same else 'ANOTHER FILE'} "
                f"in {time.perf_counter() - started:.1f} s")
        ok = ok and same
    ratio = len(patch) / len(new)
    kept = "kept" if ratio <= DELTA_MAX_RATIO else "not kept (over half the file)"
    print(f"  {label}: delta {len(patch):,} bytes = {ratio:.2%} of the full artifact ({len(new):,} bytes); "
          f"made in {made_s:.1f} s; {kept}; patch gives the new artifact: {ok}{pure}")
    return ok and ratio <= 0.20


def pi(work: Path, roles: tuple[str, ...], version: str, new_version: str) -> bool:
    old_src, new_src = work / "pi-old", work / "pi-new"
    source_copy(old_src, version, EDGE_SOURCES, None)
    line = source_copy(new_src, new_version, EDGE_SOURCES, PI_LINE)
    target = WheelTarget()
    old_wheels = work / "wheels-old"
    started = time.perf_counter()
    write_wheel_set(old_wheels, work / "old.lock", roles=roles, project_root=old_src, target=target)
    print(f"Pi ({target.label}, roles: {', '.join(roles) or 'none'}): {version} -> {new_version}, changed "
          f"{PI_LINE[0]}: `{line}`; wheel set in {time.perf_counter() - started:.0f} s")
    rebuilt = work / "rebuilt"
    build_edge_wheels(new_src, target, rebuilt)

    def second_set(name: str, replace: tuple[str, ...]) -> Path:
        folder = work / name
        shutil.copytree(old_wheels, folder)
        for prefix in replace:
            for old in folder.glob(f"{prefix}-*.whl"):
                old.unlink()
            for new in rebuilt.glob(f"{prefix}-*.whl"):
                shutil.copy2(new, folder / new.name)
        return folder

    old_tar = work / "old.tar"
    release_tool.write_pi_artifact(old_wheels, None, old_tar, version)
    base = old_tar.read_bytes()
    wheels = sorted(p.name for p in old_wheels.glob("*.whl"))
    print(f"  {len(wheels)} wheels, artifact {len(base):,} bytes ({mib(len(base))})")
    good = True
    for label, replaced in (("(a) only ioc-edge rebuilt", ("ioc_edge",)),
                            ("(b) ioc-edge and ioc-contract rebuilt", ("ioc_edge", "ioc_contract"))):
        folder = second_set(label[:3].strip("() "), replaced)
        new_tar = work / f"new-{label[1]}.tar"
        release_tool.write_pi_artifact(folder, None, new_tar, new_version)
        changed = [p.name for p in sorted(folder.glob("*.whl")) if p.name not in wheels]
        print(f"  {label}: wheels that differ: {', '.join(changed)}")
        good = pi_delta(base, new_tar.read_bytes(), label) and good
    return good


def esp32_slot(work: Path, name: str, version: str, change: tuple[Path, re.Pattern[str]] | None
               ) -> tuple[dict[str, tuple[str, int]], str]:
    src = work / name
    line = source_copy(src, version, ("firmware",), change)
    _, document = release_tool.build_release(release_tool.BuildRequest(
        kind="esp32", version=version, out=work / f"{name}-release", firmware=src / "firmware"))
    return {f["path"]: (f["sha256"], f["size"]) for f in document["files"]}, line


def esp32(work: Path, version: str, new_version: str) -> None:
    old, _ = esp32_slot(work, "esp32-old", version, None)
    new, line = esp32_slot(work, "esp32-new", new_version, ESP32_LINE)
    changed = sorted(path for path in new if old.get(path, ("", 0))[0] != new[path][0])
    total = sum(size for _, size in new.values())
    download = sum(new[path][1] for path in changed)
    print(f"ESP32: {version} -> {new_version}, changed {ESP32_LINE[0]}: `{line}` (and version.py's FW, "
          "which build sets)")
    print(f"  files that changed: {len(changed)} of {len(new)} ({', '.join(changed)}); bytes to download "
          f"{download:,} of the slot's {total:,} = {download / total:.2%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", default="", help="the Pi's roles whose extras go into the wheel set, "
                                                    "comma-separated (default: none, the smallest artifact)")
    parser.add_argument("--keep", type=Path, help="keep the work folder here (default: a temporary one)")
    args = parser.parse_args(argv)
    roles = tuple(role for role in args.roles.split(",") if role)
    version = (ROOT / "VERSION").read_text().strip()
    new_version = bump_patch(version)
    work = args.keep or Path(tempfile.mkdtemp(prefix="ota-delta-"))
    try:
        good = pi(work, roles, version, new_version)
        esp32(work, version, new_version)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("aim: a Pi delta at most 20 % of the full artifact:", "met" if good else "NOT met")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
