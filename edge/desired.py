"""The desired-state document: stored in the state folder, applied, reported.

The fleet publishes `state/desired` retained, with an increasing `version`. The agent applies a
newer version, stores it (so it runs from the stored copy while offline and after a restart) and
answers with `state/reported`. An older or equal version changes nothing and is answered with the
version the agent runs. A version that a consumer refuses is reported `rejected` (with that
version and the reason) and not stored; the agent keeps running the one it had.
"""

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from contract import ContractError, parse_downstream
from edge.errors import DesiredStateError
from edge.statefile import StateDisk, read_json
from edge.uplink import Uplink

log = logging.getLogger(__name__)


class DesiredConsumer(Protocol):
    """Something that runs part of the document (the agent's own keys, a role's section).

    Each consumer reads the keys it knows from the whole `doc` and ignores the others. Every
    consumer checks a document before any of them applies it, so a refusal changes nothing.
    """

    def check_desired(self, doc: Mapping[str, Any]) -> None:
        """Raise DesiredStateError if a known key has a value this consumer cannot run."""

    def apply_desired(self, doc: Mapping[str, Any]) -> None:
        """Run the (checked) document."""


class DesiredState:
    def __init__(
        self,
        path: Path,
        uplink: Uplink,
        consumers: Sequence[DesiredConsumer],
        *,
        disk: StateDisk | None = None,
    ) -> None:
        self.path = path
        self.uplink = uplink
        self.consumers = list(consumers)
        self.disk = disk if disk is not None else StateDisk(path.parent, reserve_bytes=0)
        saved = read_json(path, None, if_corrupt=None)
        self.version: int | None = None
        self.doc: dict[str, Any] = {}
        if (
            isinstance(saved, dict)
            and isinstance(saved.get("version"), int)
            and isinstance(saved.get("doc"), dict)
        ):
            self.version, self.doc = saved["version"], saved["doc"]

    def restore(self) -> None:
        """Run the stored document at start-up, before any connection."""
        if self.version is None:
            return
        try:
            self._apply(self.doc)
        except DesiredStateError as err:  # e.g. a newer agent's document after a downgrade
            log.error("stored desired state version %d no longer applies: %s", self.version, err)

    def receive(self, payload: bytes) -> None:
        try:
            body = parse_downstream("state_desired", payload)
        except (ContractError, ValueError) as err:
            log.warning("ignored a malformed desired-state document: %s", err)
            return
        version: int = body["version"]
        if self.version is not None and version <= self.version:
            self.uplink.state_reported(self.version, "applied")
            return
        try:
            self._apply(body["doc"])
        except DesiredStateError as err:
            log.warning("rejected desired state version %d: %s", version, err)
            self.uplink.state_reported(version, "rejected", str(err))
            return
        self.version, self.doc = version, body["doc"]
        # On a full disk the document runs without being stored (`disk` reports it); after a
        # restart the stored one runs until the broker delivers the retained document again.
        stored = self.disk.save_json(self.path, {"version": version, "doc": self.doc})
        log.info("applied desired state version %d%s", version, "" if stored else " (not stored: the disk is full)")
        self.uplink.state_reported(version, "applied")

    def _apply(self, doc: Mapping[str, Any]) -> None:
        for consumer in self.consumers:
            consumer.check_desired(doc)
        for consumer in self.consumers:
            consumer.apply_desired(doc)
