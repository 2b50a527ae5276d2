"""The one way the agent checks a server's certificate (the broker's, the fleet's)."""

import ssl
from pathlib import Path

from edge.errors import ConfigError


def verifying_context(ca_file: Path | None, setting: str) -> ssl.SSLContext:
    """The server's certificate must chain to `ca_file` (only that file; the system's CAs when it is
    None) and name the host connected to. `setting` names the option in errors (`broker.ca_file`)."""
    cafile = str(ca_file) if ca_file else None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or "not a PEM file of CA certificates"
        raise ConfigError(f"{setting}: cannot use {ca_file}: {reason}") from err
    if cafile and not context.get_ca_certs():
        raise ConfigError(f"{setting}: {ca_file} holds no CA certificate")
    # Both are the defaults of create_default_context; stated so a refactor cannot lose them.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
