"""Child devices: third-party devices (IP cameras, conference endpoints) a Pi speaks for on
`child/{child_id}/{birth,death,health}` (docs/fleet.md, "Children")."""
