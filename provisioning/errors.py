"""What can go wrong, as the technician should read it: one line and a distinct exit status.

The table (also in docs/provisioning.md):

| status | exception | meaning |
|---|---|---|
| 0 | | done |
| 1 | `ProvisionError` | anything else the tool refused to do (a bad option value, a folder it cannot write) |
| 2 | (argparse) | the command line is wrong |
| 3 | `PortNotFound` | no such serial port |
| 4 | `PortBusy` | another program has the port open |
| 5 | `NotMicroPython` | a REPL, not MicroPython's; or MicroPython just written shows no REPL |
| 6 | `BoardStoppedAnswering` | the board stopped answering in the middle of the work |
| 7 | `FleetUnreachable` | no connection to the fleet service |
| 8 | `TokenRefused` | the enrollment token is unknown, expired or already used |
| 9 | `NotAuthorised` | the API token is missing, wrong or lacks the right |
| 10 | `FleetRefused` | the fleet refused the request (e.g. the device id exists) or failed |
| 11 | `NotOnline` | the board was written but did not come online in time |
| 12 | `BatchFailed` | several boards failed, for different reasons |
| 13 | `FirmwareMismatch` | the firmware image cannot do what was asked (e.g. it lacks the role) |
| 14 | `ReleaseInvalid` | `provision release verify`: a signature or a file of the release does not check |
| 15 | `CheckFailed` | `provision check`: at least one item FAILed |
| 16 | `CheckIncomplete` | `provision check`: no item failed, but at least one is a WARN (weak, or not proven yet) |
| 20 | `NoBootloader` | `flash`: no MicroPython REPL on the port, and no ESP32 ROM bootloader either |
| 21 | `WrongChip` | `flash`, blank board: the chip is not the one the MicroPython image is for |
| 22 | `ImageHashMismatch` | `flash`, blank board: the MicroPython image's SHA-256 is not the manifest's |
| 23 | `FlashTooSmall` | `flash`, blank board: the board's flash is smaller than the image needs |
| 24 | `FlashVerifyFailed` | `flash`, blank board: the flash's MD5 after writing is not the image's |
| 130 | `Interrupted` | Ctrl-C |

A failure of `provision flash` after the board answered ends its message with what the board (and
the fleet) hold then: "the board was not changed", "the board was put back as it was", "the
board keeps its previous firmware", "the new firmware is in place" (docs/provisioning.md).
"""


class ProvisionError(Exception):
    """Base: a message for the technician (one line) and the exit status."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PortNotFound(ProvisionError):
    exit_code = 3


class PortBusy(ProvisionError):
    exit_code = 4


class NotMicroPython(ProvisionError):
    exit_code = 5


class BoardStoppedAnswering(ProvisionError):
    exit_code = 6


class FleetUnreachable(ProvisionError):
    exit_code = 7


class TokenRefused(ProvisionError):
    exit_code = 8


class NotAuthorised(ProvisionError):
    exit_code = 9


class FleetRefused(ProvisionError):
    exit_code = 10

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class NotOnline(ProvisionError):
    exit_code = 11


class BatchFailed(ProvisionError):
    exit_code = 12


class FirmwareMismatch(ProvisionError):
    exit_code = 13


class ReleaseInvalid(ProvisionError):
    exit_code = 14


class CheckFailed(ProvisionError):
    exit_code = 15


class CheckIncomplete(ProvisionError):
    exit_code = 16


class NoBootloader(ProvisionError):
    exit_code = 20


class WrongChip(ProvisionError):
    exit_code = 21


class ImageHashMismatch(ProvisionError):
    exit_code = 22


class FlashTooSmall(ProvisionError):
    exit_code = 23


class FlashVerifyFailed(ProvisionError):
    exit_code = 24


class Interrupted(ProvisionError):
    exit_code = 130


EXIT_USAGE = 2
