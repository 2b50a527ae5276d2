"""How big a message each account may send through the broker, from the contract's own limits.

A device's payload is held to the contract's upstream limit, so an oversized message is stopped
at the broker, before the fleet reads it. The fleet's own account sends the largest downstream
message the contract allows (a desired-state document). `PACKET_OVERHEAD` is the room for
everything in a packet but the payload: fixed header, topic, packet id.
"""

from contract import DOWN_LIMITS, UPSTREAM_MAX_BYTES

DEVICE_PAYLOAD_MAX = UPSTREAM_MAX_BYTES
FLEET_PAYLOAD_MAX = max(DOWN_LIMITS.values())
PACKET_OVERHEAD = 1024

# Mosquitto's `max_packet_size` applies to every client alike (Mosquitto 2.0 has no per-account
# limit), so it must let the fleet's largest message through; a device message between the two
# limits reaches the fleet, which refuses it as `oversized`.
MOSQUITTO_MAX_PACKET_SIZE = FLEET_PAYLOAD_MAX + PACKET_OVERHEAD


def packet_limit(payload_max: int) -> int:
    """The largest whole packet (any type) an account with this payload limit may send."""
    return payload_max + PACKET_OVERHEAD
