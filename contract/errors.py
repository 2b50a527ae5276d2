"""Why a message broke the contract, as one of a few countable reasons."""

from typing import Literal

RejectReason = Literal["bad_topic", "bad_json", "invalid", "oversized", "unsupported_version"]


class ContractError(ValueError):
    """A message that does not follow docs/protocol.md.

    `reason` is the counter it is filed under; the message text says what exactly is wrong.
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason
