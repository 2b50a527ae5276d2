"""A Pi's children as stored, each with its presence as shown (fleet/children/presence.py)."""

from fleet.children.models import ChildDevice
from fleet.children.presence import ChildPresence, child_presence
from fleet.liveness import State

LISTED_MAX = 128  # rows read per parent (the Pi watches at most 64; forgotten config children add some)


async def children_of(parent_id: str, parent: State) -> list[tuple[ChildDevice, ChildPresence]]:
    rows = await ChildDevice.filter(parent_id=parent_id).order_by("child_id").limit(LISTED_MAX)
    return [(row, child_presence(row.present, parent)) for row in rows]
