"""The city in small: the fleet, its embedded broker and simulated devices of every kind, at once."""
