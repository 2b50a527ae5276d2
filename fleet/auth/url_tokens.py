"""Download tokens for devices: an HMAC over a purpose, the device, what it may fetch and an expiry.

A token is `<device id>~<subject>~<expiry, Unix s>~<mac>`, the mac HMAC-SHA256(secret,
"<domain>\\0<device>\\0<subject>\\0<expiry>") in URL-safe base64 without padding. The domain
keeps tokens of one purpose (`ioc-audio-download`: a clip's SHA-256) from being accepted for
another even under the same secret. Nothing is stored: a token is checked by making its mac again.
Every character is URL-safe, so a token goes into a query string as it is.

The OTA downloads (fleet/ota/tokens.py) are these tokens with the domain `ioc-ota-download` and a
release name as the subject.
"""

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

SEPARATOR = "~"
TOKEN_MAX = 200
SECRET_FILE = "token.key"


class UrlTokenError(Exception):
    """A token that does not let its holder download: the message says why without repeating it."""


@dataclass(frozen=True, slots=True)
class Grant:
    device_id: str
    subject: str
    expires: int


def _mac(secret: bytes, domain: str, device_id: str, subject: str, expires: int) -> str:
    message = b"\0".join((domain.encode(), device_id.encode(), subject.encode(), str(expires).encode()))
    return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).rstrip(b"=").decode()


def make_token(secret: bytes, domain: str, device_id: str, subject: str, expires: int) -> str:
    if SEPARATOR in device_id or SEPARATOR in subject:
        raise ValueError("a device id or subject with '~'")
    return SEPARATOR.join((device_id, subject, str(expires), _mac(secret, domain, device_id, subject, expires)))


def check_token(secret: bytes, domain: str, token: str, now_s: float,
                renew: str = "a new one from the fleet") -> Grant:
    """The grant a token carries, or UrlTokenError (malformed, forged, or expired: the message says
    the device needs `renew`)."""
    parts = token.split(SEPARATOR) if len(token) <= TOKEN_MAX else []
    if len(parts) != 4 or not parts[2].isdigit() or len(parts[2]) > 12:
        raise UrlTokenError("the download token is malformed")
    device_id, subject, expires_text, mac = parts
    expires = int(expires_text)
    if not hmac.compare_digest(mac.encode(), _mac(secret, domain, device_id, subject, expires).encode()):
        raise UrlTokenError("the download token is not valid")
    if now_s >= expires:
        raise UrlTokenError(f"the download token has expired: the device needs {renew}")
    return Grant(device_id, subject, expires)


def load_secret(configured: SecretStr | None, folder: Path) -> bytes:
    """The configured secret, else the fleet's own random one in `folder`/token.key (made once,
    0600), so tokens outlive a restart and every fleet process sharing the folder accepts them."""
    if configured is not None:
        return configured.get_secret_value().encode()
    path = folder / SECRET_FILE
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # written whole under a temporary name, then linked: two processes starting at once
        # agree on one secret, and a crash never leaves a short file behind
        staged = folder / f".{SECRET_FILE}.{secrets.token_hex(8)}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    secret = path.read_bytes()
    if len(secret) < 32:
        raise ValueError(f"{path} holds fewer than 32 bytes: remove it and a new secret is made")
    return secret
