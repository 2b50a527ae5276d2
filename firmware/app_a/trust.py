# The certificate authorities this board trusts, for its broker (MQTT over TLS) and its fleet
# (HTTPS enrollment). Provisioning writes them to ca.der next to config.json: one or more DER
# certificates back to back (mbedtls on some ports cannot read PEM). A server is accepted only if
# its certificate chains to one of them and names the host the board dialled.
# Only start-up and enrollment import this module; the context it makes lives on in the link.
import os

import tls
from config import ConfigError

CA_FILE = "ca.der"
CA_MAX = 8192  # bytes: a few CA certificates; a larger file is refused, not read


def _der_size(data, pos):
    # Size of the DER SEQUENCE at pos (a certificate), or 0 if there is none.
    if len(data) < pos + 2 or data[pos] != 0x30:
        return 0
    n = data[pos + 1]
    if n < 0x80:
        return 2 + n
    k = n & 0x7F
    if not 1 <= k <= 3 or len(data) < pos + 2 + k:
        return 0
    size = 0
    for i in range(k):
        size = size << 8 | data[pos + 2 + i]
    return 2 + k + size


def context(path=CA_FILE):
    """A TLS client context that requires a server certificate signed by one of the CAs."""
    try:
        if os.stat(path)[6] > CA_MAX:
            raise ConfigError("%s: larger than %d bytes" % (path, CA_MAX))
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise ConfigError(path + ": missing (the CA of the broker and the fleet; provision "
                          "flash writes it from --ca-file)")
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    pos = 0
    count = 0
    while pos < len(data):
        size = _der_size(data, pos)
        if not size or pos + size > len(data):
            raise ConfigError(path + ": not DER certificates")
        try:
            ctx.load_verify_locations(data[pos:pos + size])
        except ValueError:
            raise ConfigError("%s: certificate %d is not valid" % (path, count + 1))
        pos += size
        count += 1
    if not count:
        raise ConfigError(path + ": empty")
    return ctx

