"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver verifies.

A secret is `whsec_` + base64 of 24 to 64 random bytes. A message carries three headers:
`webhook-id` (the same on every retry of one message), `webhook-timestamp` (Unix seconds of the
attempt) and `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.
Pure: no network, no framework; any sender of signed webhooks in the fleet uses it.
"""

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
KEY_MIN = 24
KEY_MAX = 64


class SecretError(ValueError):
    """A secret not in the `whsec_<base64>` format (the message never repeats the secret)."""


def new_secret(size: int = 32) -> str:
    """A fresh random secret in the `whsec_` format."""
    if not KEY_MIN <= size <= KEY_MAX:
        raise SecretError(f"a secret is {KEY_MIN} to {KEY_MAX} bytes")
    return PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret (SecretError if it is not one)."""
    if not secret.startswith(PREFIX):
        raise SecretError(f"a webhook secret starts with {PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"a webhook secret is {PREFIX!r} followed by base64") from None
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise SecretError(f"a webhook secret holds {KEY_MIN} to {KEY_MAX} bytes (this one {len(key)})")
    return key


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `<id>.<timestamp>.<body>`."""
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at sending `body`."""
    if not message_id or any(c in message_id for c in ".\r\n "):
        raise ValueError("a webhook id is non-empty, with no '.', space or line break")
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, message_id, timestamp, body)}
