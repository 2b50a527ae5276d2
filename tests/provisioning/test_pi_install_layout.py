"""docs/edge.md's "Install layout on a Pi" is what install.sh makes: every path it names, with the
modes it states, and nothing else outside the version's own venv (issue 10 §1: the two once
described different things)."""

import os
import re
import stat
from pathlib import Path

from tests.provisioning.conftest import ROOT, run_provision
from tests.provisioning.pi_bundle_support import install
from tests.support.tls import make_tls

VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+-[0-9a-f]{12}$")


def documented_layout() -> dict[str, str]:
    """path (with `<version>` for the versioned folder) -> its comment, from the code block."""
    text = (ROOT / "docs/edge.md").read_text()
    section = text.split("## Install layout on a Pi", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    layout: dict[str, str] = {}
    parents: list[tuple[int, str]] = []  # (indent, path) of the folders above
    for line in block.splitlines()[1:]:
        entry, _, comment = line.partition("#")
        if not entry.strip():
            continue
        indent = len(entry) - len(entry.lstrip())
        name = entry.strip().split(" -> ")[0]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = (parents[-1][1] if parents else "") + name
        path = "/".join("<version>" if VERSION_DIR.match(part) else part for part in path.split("/"))
        layout[path.rstrip("/")] = comment.strip()
        if name.endswith("/"):
            parents.append((indent, path))
    return layout


def test_install_makes_the_documented_layout(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    bundle = tmp_path / "bundle"
    made = run_provision("pi-bundle", "--out", str(bundle), "--site", "Trạm bơm", "--role", "sim", "--offline",
                         "--enrollment-token", "t", "--fleet", "https://fleet.example", "--broker", "h:8883",
                         "--ca-file", str(tls.ca))
    assert made.code == 0, made.err
    (bundle / "credentials.env").write_text("EDGE_BROKER__PASSWORD=x\n")  # a registered bundle's
    (bundle / "ota_keys.json").write_text('{"keys": []}\n')  # as --ota-keys ships it (content not read here)
    root = tmp_path / "root"
    result = install(bundle, root, skip_pip=True)
    assert result.returncode == 0, result.stderr

    documented = documented_layout()
    assert {"/opt/ioc-edge/versions/<version>", "/opt/ioc-edge/current", "/etc/ioc-edge/credentials.env",
            "/var/lib/ioc-edge"} <= set(documented)  # the parser read the block
    made_paths: set[str] = set()
    for path in root.rglob("*"):
        relative = "/" + path.relative_to(root).as_posix()
        parts = relative.split("/")
        if len(parts) > 5 and parts[3] == "versions":
            continue  # inside the venv of one version
        made_paths.add("/".join("<version>" if VERSION_DIR.match(p) else p for p in parts))
    folders_on_the_way = {"/opt", "/etc", "/etc/ioc-edge", "/var", "/var/lib", "/etc/systemd", "/etc/systemd/system"}
    assert made_paths - folders_on_the_way == set(documented)

    version = os.readlink(root / "opt/ioc-edge/current")
    assert re.fullmatch(r"versions/\d+\.\d+\.\d+-[0-9a-f]{12}", version), version
    assert documented["/opt/ioc-edge/current"] == ""  # the block says `current -> versions/<version>`
    for path, comment in documented.items():
        stated = re.search(r"\((0[0-7]{3})\b", comment)
        if stated:
            real = root / path.lstrip("/").replace("<version>", version.removeprefix("versions/"))
            assert oct(stat.S_IMODE(real.stat().st_mode)) == oct(int(stated[1], 8)), path
