"""The role interface: what a role (camera, sensor, hotspot, speaker, sim) gets and gives.

A role gets, from the agent:
- its own settings table (`[roles.<name>]` in the config), validated by its `RoleSpec`;
- a `RoleContext` to emit telemetry and events: stamped, checked and queued like everything else.

A role gives the agent:
- `run()`: its work, as a coroutine the agent cancels on shutdown (and restarts, with a capped
  backoff, if it fails);
- `health()`: its own figures (fps, read errors, ...), sent under `roles.<name>` in health;
- `commands()`: the commands it handles, addressed by the fleet as `<role>.<command>`;
- `check_desired()` / `apply_desired()`: its part of the desired-state document.
"""

import abc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edge.commands import CommandHandler
from edge.config import describe_validation_error
from edge.errors import ConfigError
from edge.fleet_http import FleetHttp
from edge.uplink import Uplink

Number = int | float


class RoleSettings(BaseModel):
    """Base of every role's settings: unknown keys are a mistake, reported at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleContext:
    """The agent's services for one role; everything sent is stamped and queued."""

    def __init__(self, name: str, uplink: Uplink, state_dir: Path, *, fleet: FleetHttp | None = None) -> None:
        self.name = name
        self._uplink = uplink
        self.state_dir = state_dir  # the agent's state folder; a role keeps its files in a subfolder
        self.fleet = fleet  # HTTP(S) requests to the fleet as the device; None without `[fleet] url`
        self.log = logging.getLogger(f"edge.roles.{name}")

    @property
    def device_id(self) -> str:
        return self._uplink.device_id

    def telemetry(self, readings: Mapping[str, Number], at_ms: int | None = None) -> None:
        """Send named readings (numbers) as one telemetry message tagged with this role; `at_ms`
        (Unix ms) when they stand for another time than now: a sample's, a window's start."""
        self._uplink.telemetry(self.name, readings, at_ms)

    def event(
        self,
        *,
        event_id: str,
        event_type: str,
        phase: str,
        category: str,
        data: Mapping[str, Any],
        snapshot: Mapping[str, Any] | None = None,
    ) -> None:
        """Send an event; `snapshot` is a reference to a stored image, never its bytes."""
        self._uplink.event(
            event_id=event_id,
            event_type=event_type,
            phase=phase,
            category=category,
            data=data,
            snapshot=snapshot,
        )

    def child(self, child_id: str, suffix: str, fields: Mapping[str, Any]) -> None:
        """Send a child device's `birth`, `death` or `health` (docs/protocol.md, child/…)."""
        self._uplink.child(child_id, suffix, fields)


class Role(abc.ABC):
    def __init__(self, context: RoleContext) -> None:
        self.context = context

    @property
    def name(self) -> str:
        return self.context.name

    @abc.abstractmethod
    async def run(self) -> None:
        """Do the role's work until cancelled."""

    def health(self) -> dict[str, Number]:
        return {}

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    def check_desired(self, doc: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Raise DesiredStateError if this role's part of `doc` cannot run."""

    def apply_desired(self, doc: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Run this role's part of a checked `doc`."""


SettingsT = TypeVar("SettingsT", bound=RoleSettings)


@dataclass(frozen=True, slots=True)
class RoleSpec(Generic[SettingsT]):
    """How to make a role from its settings table: the registry's entry for one role name."""

    settings: type[SettingsT]
    factory: Callable[[SettingsT, RoleContext], Role]

    def check(self, name: str, section: Mapping[str, Any]) -> SettingsT:
        try:
            return self.settings.model_validate(dict(section))
        except ValidationError as err:
            raise ConfigError(f"roles.{name}.{describe_validation_error(err)}") from err

    def create(self, name: str, section: Mapping[str, Any], context: RoleContext) -> Role:
        return self.factory(self.check(name, section), context)
