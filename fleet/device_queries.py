"""The registry's questions that the database answers: which devices carry a tag, and how many open
sequence gaps each device of a page has. Both in SQL, so a listing never loads the table (the
API's `GET /api/devices` pages and counts in SQL; docs/fleet.md, "API").
"""

from collections.abc import Collection

from pypika_tortoise.context import SqlContext
from pypika_tortoise.terms import Term, ValueWrapper
from pypika_tortoise.utils import format_alias_sql
from tortoise import Tortoise
from tortoise.functions import Count
from tortoise.queryset import QuerySet

from fleet.models import Device, SeqGap


class _HasTag(Term):
    """True when the device's `tags` (a JSON list of text) holds `tag`, compared whole.

    Tortoise has no JSON containment for SQLite, so each database gets its own form: PostgreSQL's
    jsonb `?` (an element equal to the text), SQLite's json_each. The tag is a bound parameter.
    """

    def __init__(self, tag: str, dialect: str) -> None:
        super().__init__()
        self.tag = tag
        self.dialect = dialect

    def get_sql(self, ctx: SqlContext) -> str:
        value = ValueWrapper(self.tag).get_sql(ctx)
        tags = f'"{Device._meta.db_table}"."tags"'
        if self.dialect == "postgres":
            sql = f"({tags} ? {value})"
        else:
            sql = f"EXISTS (SELECT 1 FROM json_each({tags}) WHERE json_each.value = {value})"
        return str(format_alias_sql(sql, self.alias, ctx)) if ctx.with_alias else sql


def with_tag(query: QuerySet[Device], tag: str) -> QuerySet[Device]:
    """`query` narrowed to the devices whose tags include `tag`."""
    dialect = Tortoise.get_connection("default").capabilities.dialect
    return query.annotate(has_tag=_HasTag(tag, dialect)).filter(has_tag=True)


async def open_gaps(device_ids: Collection[str]) -> dict[str, int]:
    """Open sequence gaps per device, in one grouped query; a device with none is left out."""
    if not device_ids:
        return {}
    rows = await (SeqGap.filter(device_id__in=list(device_ids), open=True).annotate(n=Count("id"))
                  .group_by("device_id").values_list("device_id", "n"))
    return {str(device_id): int(n) for device_id, n in rows}
