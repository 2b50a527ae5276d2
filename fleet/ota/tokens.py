"""Per-device download tokens for OTA files: fleet/auth/url_tokens.py's tokens with the domain
`ioc-ota-download` and the release's name as the subject.

A token is `<device id>~<release name>~<expiry, Unix s>~<mac>`, the mac HMAC-SHA256(secret,
"ioc-ota-download\\0<device>\\0<release>\\0<expiry>") in URL-safe base64 without padding. Nothing
is stored: a token is checked by making its mac again. Device ids and release names have no `~`;
every character of a token is URL-safe, so it goes into a query string as it is.
"""

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from fleet.auth import url_tokens
from fleet.auth.url_tokens import SECRET_FILE, SEPARATOR, TOKEN_MAX
from fleet.auth.url_tokens import UrlTokenError as TokenError

__all__ = ["SECRET_FILE", "SEPARATOR", "TOKEN_MAX", "DownloadGrant", "TokenError", "check_token", "make_token",
           "token_secret"]

DOMAIN = "ioc-ota-download"


@dataclass(frozen=True, slots=True)
class DownloadGrant:
    device_id: str
    release: str
    expires: int


def make_token(secret: bytes, device_id: str, release: str, expires: int) -> str:
    return url_tokens.make_token(secret, DOMAIN, device_id, release, expires)


def check_token(secret: bytes, token: str, now_s: float) -> DownloadGrant:
    """The grant a token carries, or TokenError (malformed, forged, or expired)."""
    grant = url_tokens.check_token(secret, DOMAIN, token, now_s, renew="a new offer")
    return DownloadGrant(grant.device_id, grant.subject, grant.expires)


def token_secret(configured: SecretStr | None, folder: Path) -> bytes:
    """FLEET_OTA_TOKEN_SECRET, else the fleet's own random secret in `folder`/token.key (made once,
    0600), so tokens outlive a restart and every fleet process sharing the folder accepts them."""
    return url_tokens.load_secret(configured, folder)
