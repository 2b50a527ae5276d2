# What a node does besides being a node (later: light, speaker, sensor). A role is made by
# its factory with the device and its config, and offers:
#   name            -- listed in the birth certificate
#   tick(now_ms)    -- called every loop; sends readings through device.telemetry(name, r)
#   stop()          -- called on shutdown
# Roles are imported only when configured, so an unused role costs no heap.


def _sim(device, cfg):
    from roles.sim import Sim
    return Sim(device, cfg)


REGISTRY = {"sim": _sim}


def load(names, device, cfg):
    out = []
    for name in names:
        factory = REGISTRY.get(name)
        if factory is None:
            raise ValueError("unknown role %r (known: %s)" % (name, ", ".join(REGISTRY)))
        out.append(factory(device, cfg))
    return out
