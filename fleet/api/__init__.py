"""The fleet's HTTP API (FastAPI): one routes module per resource."""
