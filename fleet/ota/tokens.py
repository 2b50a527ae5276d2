"""Per-device download tokens: an HMAC over the device, the release and the expiry.

A token is `<device id>~<release name>~<expiry, Unix s>~<mac>`, the mac the first 32 bytes of
HMAC-SHA256(secret, "ioc-ota-download\\0<device>\\0<release>\\0<expiry>") in URL-safe base64
without padding. Nothing is stored: a token is checked by making its mac again. Device ids and
release names have no `~`; every character of a token is URL-safe, so it goes into a query
string as it is.
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
_DOMAIN = b"ioc-ota-download"
SECRET_FILE = "token.key"


class TokenError(Exception):
    """A token that does not let its holder download: `msg` says why without repeating it."""


@dataclass(frozen=True, slots=True)
class DownloadGrant:
    device_id: str
    release: str
    expires: int


def _mac(secret: bytes, device_id: str, release: str, expires: int) -> str:
    message = b"\0".join((_DOMAIN, device_id.encode(), release.encode(), str(expires).encode()))
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: bytes, device_id: str, release: str, expires: int) -> str:
    if SEPARATOR in device_id or SEPARATOR in release:
        raise ValueError("a device id or release name with '~'")
    return SEPARATOR.join((device_id, release, str(expires), _mac(secret, device_id, release, expires)))


def check_token(secret: bytes, token: str, now_s: float) -> DownloadGrant:
    """The grant a token carries, or TokenError (malformed, forged, or expired)."""
    parts = token.split(SEPARATOR) if len(token) <= TOKEN_MAX else []
    if len(parts) != 4 or not parts[2].isdigit() or len(parts[2]) > 12:
        raise TokenError("the download token is malformed")
    device_id, release, expires_text, mac = parts
    expires = int(expires_text)
    if not hmac.compare_digest(mac.encode(), _mac(secret, device_id, release, expires).encode()):
        raise TokenError("the download token is not valid")
    if now_s >= expires:
        raise TokenError("the download token has expired: the device needs a new offer")
    return DownloadGrant(device_id, release, expires)


def token_secret(configured: SecretStr | None, folder: Path) -> bytes:
    """FLEET_OTA_TOKEN_SECRET, else the fleet's own random secret in `folder`/token.key (made once,
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
