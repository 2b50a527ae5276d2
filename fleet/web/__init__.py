"""The server-rendered pages for people (Jinja2; assets served locally, nothing from a CDN)."""
