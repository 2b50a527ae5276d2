"""A full disk during a Pi update (docs/ota.md `no_space`): the install root on a small tmpfs (as root),
filled so that the download fails, then so that the venv fails; each time `failed` / `no_space`,
nothing switched, what the update wrote removed, the old version running; with room again the
same release installs."""

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.ota_support import BASE, PATCH, Kit, PiRig, offer
from tests.edge.small_disk import unfill
from tests.edge.test_ota_install import wait_terminal
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def root_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """The install root on its own small file system (the filler beside versions/: an update
    removes whatever else it finds in versions/)."""
    folder = tmp_path / "pi" / "opt"
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(folder)], capture_output=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}"
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def reasons(pi: PiRig, release: str) -> list[str]:
    return [p["detail"]["reason"] for p in pi.progress() if p["release"] == release and p["status"] == "failed"]


def test_a_full_disk_fails_the_update_with_no_space_and_switches_nothing(
        tmp_path: Path, ota_kit: Kit, mosquitto: Mosquitto, root_tmpfs: Path) -> None:
    pi = PiRig(tmp_path / "pi", ota_kit, mosquitto.port).start()
    try:
        patch = ota_kit.releases[PATCH]
        pi.server.add(patch.data)
        # 1 MiB: not even the 3.2 MB artifact; 8 MiB: the artifact and its unpacked wheels, no venv
        for leave, stage in ((1 << 20, "download"), (8 << 20, "venv")):
            unfill(root_tmpfs)
            _fill_leaving(root_tmpfs, leave)
            name = f"pi-full-{stage}"
            pi.publish_offer(offer(ota_kit, patch, pi.server.url, name=name, offer_id=f"o-{uuid.uuid4().hex[:8]}"))
            assert wait_terminal(pi, name)[-1] == "failed", (pi.statuses(name), pi.log_text()[-3000:])
            assert reasons(pi, name) == ["no_space"], pi.log_text()[-2000:]
            assert sorted(p.name for p in (root_tmpfs / "versions").iterdir()) == [BASE]
            assert pi.running() == BASE and "trial" not in pi.ota_state()
            if stage == "venv":
                assert "installing" in pi.statuses(name)  # it got as far as the venv
        unfill(root_tmpfs)
        pi.publish_offer(offer(ota_kit, patch, pi.server.url, name="pi-room-again"))
        assert wait_terminal(pi, "pi-room-again")[-1] == "confirmed"
        assert pi.running() == PATCH and pi.supervisor.exits == [75]
    finally:
        pi.close()


def _fill_leaving(folder: Path, room: int) -> None:
    free = shutil.disk_usage(folder).free
    with (folder / "filler").open("wb") as handle:
        left = free - room
        while left > 0:
            step = min(left, 1 << 20)
            handle.write(bytes(step))
            left -= step
