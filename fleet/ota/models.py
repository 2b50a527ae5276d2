"""What the fleet stores about releases (Tortoise ORM; app label "models", so `models.Release`).

Pure storage: the checks live in fleet/ota/releases.py, the bytes in fleet/ota/store.py
(docs/ota.md, docs/fleet.md "Releases").
"""

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Release(Model):
    """A published, signed release: its metadata text exactly as signed, and what was parsed from it."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)  # e.g. esp32-0.2.0
    kind = fields.CharField(max_length=16, db_index=True)  # esp32 | pi
    version = fields.CharField(max_length=32)  # MAJOR.MINOR.PATCH
    min_version = fields.CharField(max_length=32)
    floor = fields.CharField(max_length=32)
    classes: list[str] = fields.JSONField(default=list)  # device classes, e.g. ["pi-arm64"]
    meta = fields.TextField()  # the signed metadata text, byte for byte (UTF-8)
    sigs: list[dict[str, str]] = fields.JSONField(default=list)  # [{"key": id, "sig": base64}] as published
    key_ids: list[str] = fields.JSONField(default=list)  # the ids of the signatures the fleet's keys checked
    files: list[dict[str, Any]] = fields.JSONField(default=list)  # [{"path", "sha256", "size"}] in the metadata's order
    expires = fields.BigIntField()  # Unix seconds, from the metadata
    total_size = fields.BigIntField()  # the sum of the files' sizes
    downloads = fields.BigIntField(default=0)  # file requests answered (200 or 206) with its tokens
    bytes_served = fields.BigIntField(default=0)
    # Pi deltas: `pending` from the publish until the fleet's delta worker has made them, then
    # `done` (or `failed`, logged); `none` for a release that has no deltas (esp32)
    deltas_state = fields.CharField(max_length=8, default="none")
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    created_by = fields.CharField(max_length=80)

    class Meta:
        table = "ota_release"


class ReleaseBlob(Model):
    """A stored file a release may serve: one of its files, or a delta to its (one) file.

    The store keeps a blob while any row names its sha256; a delta row names the file it patches
    (`base_sha256`) and the release that file came from.
    """

    id = fields.IntField(primary_key=True)
    release: fields.ForeignKeyRelation[Release] = fields.ForeignKeyField(
        "models.Release", related_name="blobs", on_delete=fields.CASCADE)
    release_id: int
    sha256 = fields.CharField(max_length=64, db_index=True)
    size = fields.BigIntField()
    base_sha256 = fields.CharField(max_length=64, null=True)  # set: a bsdiff4 delta from that file
    base_release = fields.CharField(max_length=64, null=True)  # the release the base file came from

    class Meta:
        table = "ota_release_blob"
        unique_together = (("release", "sha256"),)
