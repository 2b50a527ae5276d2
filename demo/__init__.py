"""The city in small: the fleet, its embedded broker and simulated devices of every kind, at once."""

KINDS = ("light", "speaker", "sensor", "camera", "hotspot")  # the kinds of device the city has (demo/devices.py)
