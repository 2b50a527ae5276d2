# The role registry: which roles this firmware has, and how start-up makes them.


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
