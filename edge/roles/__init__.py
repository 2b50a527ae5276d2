"""Roles: what a Pi does besides being present (camera, sensors, hotspot, speaker...).

`ROLES` is the registry: role name -> how to build it. A new role is a module here and a line
below; its settings are the `[roles.<name>]` table of the config file. A role's module (and the
libraries it needs: OpenCV for the camera, pyserial for sensors, httpx for the speaker) is imported
only when a config names the role, so a Pi installs only what its roles use.
"""

import importlib
import importlib.metadata
from collections.abc import Iterator, Mapping
from typing import Any

from edge.errors import ConfigError
from edge.roles.base import Role, RoleContext, RoleSettings, RoleSpec

# name -> (module, settings class, role class)
_WHERE: Mapping[str, tuple[str, str, str]] = {
    "sim": ("edge.roles.sim", "SimSettings", "SimRole"),
    "camera": ("edge.roles.camera", "CameraRoleSettings", "CameraRole"),
    "sensor": ("edge.roles.sensor", "SensorSettings", "SensorRole"),
    "hotspot": ("edge.roles.hotspot", "HotspotSettings", "HotspotRole"),
    "speaker": ("edge.roles.speaker", "SpeakerSettings", "SpeakerRole"),
    "children": ("edge.roles.children", "ChildrenSettings", "ChildrenRole"),
}


def _extras() -> list[str]:
    """The extras ioc-edge declares (edge/pyproject.toml): one per role that needs more."""
    try:
        return importlib.metadata.metadata("ioc-edge").get_all("Provides-Extra") or []
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return []


def _load(name: str) -> RoleSpec[Any]:
    module_name, settings, role = _WHERE[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = err.name or str(err)
        hint = f"; install the role's extra: pip install 'ioc-edge[{name}]'" if name in _extras() else ""
        raise ConfigError(f"roles.{name}: this installation lacks {missing}, which the role needs{hint}") from err
    return RoleSpec(getattr(module, settings), getattr(module, role))


class _Registry(Mapping[str, RoleSpec[Any]]):
    def __getitem__(self, name: str) -> RoleSpec[Any]:
        if name not in _WHERE:
            raise KeyError(name)
        return _load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


ROLES: Mapping[str, RoleSpec[Any]] = _Registry()

__all__ = ["ROLES", "Role", "RoleContext", "RoleSettings", "RoleSpec"]
