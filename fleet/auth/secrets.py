"""Passwords and tokens: only hashes are stored, and comparisons take constant time."""

import base64
import hashlib
import hmac
import secrets

# scrypt: memory-hard, in the standard library. n=2**14, r=8 uses 16 MiB and ~50 ms per check.
_N, _R, _P = 2**14, 8, 1
TOKEN_PREFIX = "ioc_"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_token() -> str:
    """A bearer token (API token, session, enrollment token): 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens have full entropy, so one SHA-256 is enough to store them safely (unlike passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_device_password() -> str:
    return secrets.token_urlsafe(24)
