"""Over-the-air updates in the fleet: releases, their store and downloads, rollouts (docs/ota.md)."""
