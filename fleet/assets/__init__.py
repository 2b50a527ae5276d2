"""Assets (docs/assets.md): the poles, cabinets, speaker masts and intersections the city owns,
and the devices fitted to them, which can be swapped."""
