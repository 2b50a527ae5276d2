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
#
# This package's own module stays empty: the light and speaker roles import their helpers
# (roles.light_program, roles.clip_fetch, ...) for a moment and drop them, and each such import
# loads the package first. The registry is roles/registry.py, imported only at start.
