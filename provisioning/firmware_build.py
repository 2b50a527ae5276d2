"""Precompile a board's app slot with mpy-cross.

Compiling a module from source on the board takes several times its final size in transient heap;
a slot of `.mpy` files is loaded without that peak (the boot stage accepts `app.mpy`). The boot
stage itself (`main.py`) stays source: it is tiny and never updated.

Each module is compiled with its path inside the slot as its name (`roles/light.py`, what a traceback
shows) and without the line-number table (`-X no-source-lines`): about 1.5 KB less resident heap for
a role's firmware on a 64 KB board, for tracebacks that name the function but not the line.

    python -m provisioning.firmware_build <board folder> [slot]

replaces every `app_<slot>/**/*.py` in the board folder by its `.mpy` (MicroPython imports a
`.py` before an `.mpy` of the same name, so the sources must go).
"""

import subprocess
import sys
from pathlib import Path

MPY_CROSS = Path(sys.executable).with_name("mpy-cross")


class BuildError(Exception):
    """mpy-cross refused a module; the message is its own."""


def compile_slot(slot_dir: Path | str, mpy_cross: Path = MPY_CROSS) -> list[Path]:
    """Compile each .py under `slot_dir` to .mpy in place and remove the source."""
    built: list[Path] = []
    slot = Path(slot_dir)
    for source in sorted(slot.rglob("*.py")):
        target = source.with_suffix(".mpy")
        name = source.relative_to(slot).as_posix()
        # its own session: a terminal's Ctrl-C is for the program that asked (the demo stops in
        # order; provision flash puts the board back), not a failure of the compiler
        result = subprocess.run([str(mpy_cross), "-X", "no-source-lines", "-s", name, "-o", str(target),
                                 str(source)], capture_output=True, text=True, check=False,
                                start_new_session=True)
        if result.returncode != 0:
            raise BuildError(f"{source}: {result.stderr.strip()}")
        source.unlink()
        built.append(target)
    return built


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m provisioning.firmware_build <board folder> [slot]", file=sys.stderr)
        return 1
    slot = argv[1] if len(argv) == 2 else "a"
    try:
        built = compile_slot(Path(argv[0]) / f"app_{slot}")
    except BuildError as err:
        print(f"firmware_build: {err}", file=sys.stderr)
        return 1
    print(f"firmware_build: {len(built)} modules compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
