"""The children role's settings: `[roles.children]` with one `[[roles.children.children]]` per
third-party device the Pi watches, and an optional `[roles.children.discovery]`.

A child's id is a device id of the contract (`[a-z0-9][a-z0-9-]{1,62}`, contract/topics.py),
here at most 32 characters: it is a topic level (`child/{child_id}/…`) and a fleet key.
"""

from typing import Annotated

from pydantic import Field, field_validator

from edge.roles.base import RoleSettings

MAX_CHILDREN = 64  # children one Pi watches (config and desired state together)
MAX_STREAMS = 8  # of them with an RTSP stream decoded: each costs a reader thread and decoding

ChildId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$")]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]  # ip_camera, conference_endpoint, ...
Port = Annotated[int, Field(ge=1, le=65535)]


class ChildSettings(RoleSettings):
    id: ChildId
    kind: Kind = "ip_camera"
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    ports: list[Port] = Field(default_factory=lambda: [554], min_length=1, max_length=8)  # TCP reachability
    rtsp_url: str | None = Field(default=None, min_length=8, max_length=500, pattern=r"^rtsps?://")
    icmp: bool = False  # also ping it, where the Pi allows unprivileged ICMP sockets
    period_s: float = Field(default=30.0, ge=0.2, le=3600.0)  # one check (and one health) per period
    timeout_s: float = Field(default=3.0, gt=0.0, le=30.0)  # per TCP connect and per ping
    down_after: int = Field(default=2, ge=1, le=100)  # failed checks in a row before a death
    frame_within_s: float = Field(default=10.0, gt=0.0, le=600.0)  # N: a frame decoded within this, or no_frames
    frozen_after_s: float = Field(default=30.0, gt=0.0, le=3600.0)  # M: the same picture this long is frozen
    frozen_diff: float = Field(default=1.0, ge=0.0, le=255.0)  # mean absolute grey difference that still is "the same"
    fw: str | None = Field(default=None, min_length=1, max_length=64)  # sent in its birth when known
    hw: str | None = Field(default=None, min_length=1, max_length=200)


class DiscoverySettings(RoleSettings):
    """WS-Discovery (ONVIF) probes on the Pi's LAN; what answers is proposed, never watched by itself."""

    target: str = Field(default="239.255.255.250:3702", pattern=r"^[A-Za-z0-9.-]+:\d{1,5}$")
    every_s: float = Field(default=3600.0, ge=1.0, le=7 * 86_400.0)
    wait_s: float = Field(default=3.0, gt=0.0, le=30.0)  # answers collected after one probe
    max_found: int = Field(default=64, ge=1, le=1024)  # answers read per probe; the rest is ignored
    types: str = Field(default="dn:NetworkVideoTransmitter", max_length=200)  # the probe's Types

    def address(self) -> tuple[str, int]:
        host, _, port = self.target.rpartition(":")
        return host, int(port)


class ChildrenSettings(RoleSettings):
    children: list[ChildSettings] = Field(default_factory=list, max_length=MAX_CHILDREN)
    discovery: DiscoverySettings | None = None

    @field_validator("children")
    @classmethod
    def _unique(cls, children: list[ChildSettings]) -> list[ChildSettings]:
        return check_children(children)


def check_children(children: list[ChildSettings]) -> list[ChildSettings]:
    """Ids unique, at most MAX_CHILDREN, at most MAX_STREAMS with a stream; ValueError says which bound."""
    ids = [c.id for c in children]
    if len(set(ids)) != len(ids):
        raise ValueError("child ids must be unique")
    if len(children) > MAX_CHILDREN:
        raise ValueError(f"at most {MAX_CHILDREN} children")
    if sum(c.rtsp_url is not None for c in children) > MAX_STREAMS:
        raise ValueError(f"at most {MAX_STREAMS} children with an rtsp_url")
    return children
