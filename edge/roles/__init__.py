"""Roles: what a Pi does besides being present (camera, sensors, hotspot, speaker...).

`ROLES` is the registry: role name -> how to build it. A new role is a module here and a line
below; its settings are the `[roles.<name>]` table of the config file.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from edge.roles.base import Role, RoleContext, RoleSettings, RoleSpec
from edge.roles.camera import CameraRole, CameraRoleSettings
from edge.roles.hotspot import HotspotRole, HotspotSettings
from edge.roles.sensor import SensorRole, SensorSettings
from edge.roles.sim import SimRole, SimSettings
from edge.roles.speaker import SpeakerRole, SpeakerSettings

ROLES: Mapping[str, RoleSpec[Any]] = MappingProxyType(
    {
        "sim": RoleSpec(SimSettings, SimRole),
        "camera": RoleSpec(CameraRoleSettings, CameraRole),
        "sensor": RoleSpec(SensorSettings, SensorRole),
        "hotspot": RoleSpec(HotspotSettings, HotspotRole),
        "speaker": RoleSpec(SpeakerSettings, SpeakerRole),
    }
)

__all__ = ["ROLES", "Role", "RoleContext", "RoleSettings", "RoleSpec"]
