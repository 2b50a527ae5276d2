"""The `children` role: third-party devices watched by a Pi (docs/edge-roles.md, "children")."""

from edge.roles.children.role import ChildrenRole
from edge.roles.children.settings import ChildrenSettings

__all__ = ["ChildrenRole", "ChildrenSettings"]
