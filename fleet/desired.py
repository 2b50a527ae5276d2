"""A device's desired-state document: the next version claimed in the database by compare-and-set,
so two writers (an operator's PUT, broadcast delivery, several fleet instances) never send the same
number. Publishing it (retained) is the caller's part."""

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from contract import make_desired
from fleet.models import Device


class DesiredChanged(Exception):
    """Another writer claimed the next version first: read the device again and retry."""


async def claim_desired(device_id: str, expected_version: int, doc: dict[str, Any], *,
                        conn: BaseDBAsyncClient | None = None) -> tuple[int, str, bytes]:
    """Store `doc` as version expected_version + 1 if the device is still at `expected_version`;
    (version, topic, payload) to publish. ContractError if the document breaks the contract (too
    large), DesiredChanged if the version moved meanwhile; nothing is stored then."""
    version = expected_version + 1
    topic, payload = make_desired(device_id, version, doc)
    query = Device.filter(id=device_id, desired_version=expected_version)
    if conn is not None:
        query = query.using_db(conn)
    if not await query.update(desired_version=version, desired_doc=doc):
        raise DesiredChanged(f"the desired state of {device_id!r} changed meanwhile")
    return version, topic, payload
