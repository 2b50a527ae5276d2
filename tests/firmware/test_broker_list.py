"""The board tries its brokers in turn (broker_host, then broker_others): docs/firmware.md."""

from collections.abc import Callable

from provisioning.hostboard import EXIT_CONFIG
from tests.firmware.support import HostBoard
from tests.support.mosquitto import Mosquitto, free_port


def test_a_board_whose_first_broker_is_down_connects_to_the_next(
        boards: Callable[..., HostBoard], device_id: str, mosquitto: Mosquitto) -> None:
    dead = free_port()  # nothing listens there
    board = boards(device_id, port=dead, broker_others=[f"127.0.0.1:{mosquitto.port}"]).start()
    board.wait_console(rf"fw: connected ses=\d+ to 127\.0\.0\.1:{mosquitto.port}")
    assert f"to 127.0.0.1:{dead}" not in board.console()
    assert "connect failed" in board.console()  # the first address was tried, and failed


def test_a_bad_broker_list_is_one_clear_line(boards: Callable[..., HostBoard], device_id: str) -> None:
    board = boards(device_id, broker_others=["127.0.0.1:port"])
    board.start()
    assert board.wait_exit() == EXIT_CONFIG
    assert board.console().strip().splitlines()[-1] == (
        'fw: config error: config.json: broker_others must be a list of "host" or "host:port"')
