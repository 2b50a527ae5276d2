"""How a device reaches the broker: the URL it is given and the CA it checks the broker with.

The rule (docs/provisioning.md, "Broker and TLS"): a device always speaks mqtts and verifies the
broker's certificate against a CA it holds, unless the technician explicitly asks for plaintext
(`--insecure-plaintext`, lab networks only). Plaintext is never chosen silently: not when the
fleet hands out a TLS address, and not when it hands out a plaintext one either.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from provisioning.errors import ProvisionError

TLS_PORT = 8883
PLAIN_PORT = 1883
# A CA bundle is a few KB; anything this large is the wrong file.
CA_FILE_MAX_BYTES = 1_000_000


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"mqtt{'s' if self.tls else ''}://{self.host}:{self.port}"


def parse_broker(value: str, *, plaintext: bool) -> BrokerAddress:
    """`mqtts://HOST[:PORT]`, `mqtt://HOST[:PORT]` or `HOST[:PORT]` (TLS unless `plaintext`)."""
    scheme = "mqtt" if plaintext else "mqtts"
    parts = urlsplit(value if "://" in value else f"{scheme}://{value}")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ProvisionError("--broker: expected mqtts://HOST:PORT, mqtt://HOST:PORT or HOST:PORT")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProvisionError("--broker: give only the scheme, host and port (no user, path or query)")
    try:
        port = parts.port
    except ValueError as err:
        raise ProvisionError("--broker: the port is not a number from 1 to 65535") from err
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (TLS_PORT if tls else PLAIN_PORT), tls)


def read_ca_file(path: Path) -> str:
    """The CA certificates of `path` as PEM text, after checking they are usable for verification.

    Only certificates are kept (a private key in the file is refused, never copied to a device).
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(CA_FILE_MAX_BYTES + 1)
    except OSError as err:
        raise ProvisionError(f"--ca-file: cannot read {path}: {err.strerror or err}") from err
    if len(data) > CA_FILE_MAX_BYTES:
        raise ProvisionError(f"--ca-file: {path} is larger than {CA_FILE_MAX_BYTES} bytes; give the CA certificate")
    if b"PRIVATE KEY" in data:
        raise ProvisionError(f"--ca-file: {path} holds a private key; give only the CA's certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # empty: not the system's CAs
    try:
        context.load_verify_locations(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError) as err:
        raise ProvisionError(f"--ca-file: {path} is not a PEM file of certificates") from err
    certificates = context.get_ca_certs(binary_form=True)
    if not certificates:
        raise ProvisionError(f"--ca-file: {path} holds no CA certificate (a server's own certificate will "
                             "not do: give the CA that signed it)")
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in certificates)


@dataclass(frozen=True)
class TransportChoice:
    """What the technician asked for, checked before anything is registered."""

    override: BrokerAddress | None  # --broker
    ca_pem: str | None  # --ca-file, read and checked
    system_ca: bool  # --system-ca: the device's own CA store verifies the broker
    plaintext: bool  # --insecure-plaintext

    @classmethod
    def from_options(cls, *, broker: str | None, ca_file: Path | None, system_ca: bool,
                     plaintext: bool) -> TransportChoice:
        override = parse_broker(broker, plaintext=plaintext) if broker else None
        if plaintext:
            if override is not None and override.tls:
                raise ProvisionError("--insecure-plaintext contradicts --broker mqtts://; drop one of them")
            if ca_file is not None or system_ca:
                raise ProvisionError("--insecure-plaintext turns TLS off; --ca-file (or $PROVISION_BROKER_CA_FILE) "
                                     "and --system-ca then have nothing to verify: drop them")
            return cls(override, None, False, True)
        if override is not None and not override.tls:
            raise ProvisionError("--broker mqtt:// is plaintext: the device's password would cross the network "
                                 "in clear. Use mqtts://, or add --insecure-plaintext on a lab network")
        if ca_file is not None and system_ca:
            raise ProvisionError("give either --ca-file or --system-ca, not both")
        if ca_file is None and not system_ca:
            raise ProvisionError("the device speaks TLS and must check the broker's certificate: give "
                                 "--ca-file FILE (the CA that signed it), or --system-ca for a certificate "
                                 "from a public CA; --insecure-plaintext only on a lab network")
        return cls(override, read_ca_file(ca_file) if ca_file else None, system_ca, False)

    def resolve(self, fleet_says: BrokerAddress | None) -> BrokerAddress:
        """The address the device is given: --broker, else the fleet's answer, checked against the rule."""
        if self.override is not None:
            return self.override
        if fleet_says is None:
            raise ProvisionError("no broker address: pass --broker")
        if fleet_says.tls and self.plaintext:
            raise ProvisionError(f"the fleet gives devices {fleet_says.url}, a TLS listener; drop "
                                 "--insecure-plaintext, or give --broker mqtt://HOST:PORT of a plaintext one")
        if not fleet_says.tls and not self.plaintext:
            raise ProvisionError(f"the fleet gives devices {fleet_says.url}, without TLS: the password would "
                                 "cross the network in clear. Give --broker mqtts://HOST:PORT of the broker's "
                                 "TLS listener, or --insecure-plaintext on a lab network")
        return fleet_says
