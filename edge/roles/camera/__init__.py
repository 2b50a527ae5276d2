"""The camera role: motion events with one snapshot each, from RTSP streams or files."""

from edge.roles.camera.role import CameraRole
from edge.roles.camera.settings import CameraRoleSettings

__all__ = ["CameraRole", "CameraRoleSettings"]
