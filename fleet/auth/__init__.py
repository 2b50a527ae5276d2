"""People and devices: who may do what, and how they prove who they are."""
