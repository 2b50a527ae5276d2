"""The Pi agent's own class and the class `provision release build` writes for the same machine
agree, so a release built for a machine is taken by an agent on it (docs/ota.md, The Pi path)."""

import platform

from contract.release import _CLASS
from edge.ota import this_device_class
from provisioning.release import _MACHINE_CLASS


def test_the_agent_names_this_machine_as_the_signer_tool_does() -> None:
    machine = platform.machine().lower()
    assert this_device_class() == _MACHINE_CLASS[machine]
    assert _CLASS.fullmatch(this_device_class())
