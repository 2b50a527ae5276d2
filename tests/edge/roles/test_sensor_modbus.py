"""The sensor role reading Modbus RTU registers from a pymodbus server on the other end of a
socat pty pair (a real serial line, real RTU frames with CRCs)."""

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusSerialServer

from edge.agent import Agent
from edge.roles.sensor import SensorRole
from tests.edge.helpers import ConfigFactory, until
from tests.edge.roles.conftest import PtyPair
from tests.edge.roles.helpers import checked_upstream, role_telemetry
from tests.support.mqtt_probe import Probe


async def test_modbus_holding_and_input_registers_over_a_serial_line(
    edge_config: ConfigFactory, probe: Probe, pty_pair: PtyPair
) -> None:
    # a temperature/humidity transmitter: holding 0 = temp ×10 (signed), input 1 = RH ×10
    registers = ModbusDeviceContext(
        # pymodbus' blocks start at 1 for protocol address 0
        hr=ModbusSequentialDataBlock(1, [0x10000 - 25, 0]),  # -2.5 °C
        ir=ModbusSequentialDataBlock(1, [0, 653]),
    )
    server = ModbusSerialServer(
        ModbusServerContext(devices={7: registers}, single=False), port=pty_pair.sensor, baudrate=19200
    )
    await server.serve_forever(background=True)  # listening before the agent polls it
    settings = {
        "source": "modbus",
        "port": pty_pair.device,
        "baudrate": 19200,
        "modbus_device_id": 7,
        "registers": [
            {"name": "temp_c", "address": 0, "kind": "holding", "scale": 0.1, "signed": True},
            {"name": "rh", "address": 1, "kind": "input", "scale": 0.1},
        ],
        "poll_s": 0.05,
        "median": 1,
        "aggregate_s": 0,
    }
    try:
        async with Agent(edge_config(roles={"sensor": settings})) as agent:
            role = agent.roles["sensor"]
            assert isinstance(role, SensorRole)
            (first, *_) = await until(
                lambda: [t["r"] for t in role_telemetry(probe, "sensor") if "temp_c" in t["r"]], "register readings"
            )
            await until(lambda: role.source.frames >= 5, "several polls")
    finally:
        await server.shutdown()
    assert first["temp_c"] == -2.5 and round(first["rh"], 1) == 65.3
    assert role.read_errors == 0
    checked_upstream(probe)
