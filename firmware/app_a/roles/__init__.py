# What a node does besides being a node: light, speaker, sensor (and sim, a stand-in). A role
# is made by its factory with the device and its config, and offers:
#   name            -- listed in the birth certificate
#   tick(ticks_ms)  -- called every loop; sends through device.telemetry() / device.event()
#   figures()       -- its own figures for health (`roles` in health)
#   stop()          -- called on shutdown
# and optionally:
#   key, check(value) -> error | None, apply(value)   -- its part of the desired-state document
#   commands        -- {name: handler(args) -> (status, detail)}, merged into the device's
# Roles are imported only when configured, so an unused role costs no heap.


# name -> the class in roles/<name>.py (provisioning/image.py reads the names from this dict)
REGISTRY = {"sim": "Sim", "light": "Light", "speaker": "Speaker", "sensor": "Sensor"}


def load(names, device, cfg):
    out = []
    for name in names:
        if name not in REGISTRY:
            raise ValueError("unknown role %r (known: %s)" % (name, ", ".join(REGISTRY)))
        module = __import__("roles." + name, None, None, ("x",))
        out.append(getattr(module, REGISTRY[name])(device, cfg))
    return out
