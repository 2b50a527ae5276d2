"""Users, sessions and API tokens, free of HTTP: the routes and the CLI both use these."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleet.auth.roles import Permission, Role, allows
from fleet.auth.secrets import hash_password, new_token, token_hash, verify_password
from fleet.models import ApiToken, User

SESSION_TTL = timedelta(hours=12)
LINK_TTL = timedelta(seconds=60)
MIN_PASSWORD = 12
# what a bearer token or the session cookie may be; a login link ("link") is redeemed only
# through its own endpoint (redeem_login_link), never presented as a token
BEARER_KINDS = ("session", "api")


class AuthError(Exception):
    """Who you are could not be established (401)."""


class PasswordPolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return allows(self.role, permission)


def check_password_policy(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PasswordPolicyError(f"a password needs at least {MIN_PASSWORD} characters")
    if username.lower() in password.lower():
        raise PasswordPolicyError("a password must not contain the user name")


async def create_user(username: str, password: str, role: Role, full_name: str = "") -> User:
    check_password_policy(password, username)
    password_hash = await asyncio.to_thread(hash_password, password)
    return await User.create(username=username, password_hash=password_hash, role=role.value,
                             full_name=full_name)


async def login(username: str, password: str) -> tuple[str, ApiToken]:
    user = await User.get_or_none(username=username)
    # verify even for unknown users, so timing does not tell which user names exist
    stored = user.password_hash if user else "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA"
    # scrypt takes ~50 ms of CPU: in a thread, so the event loop serves everyone else meanwhile
    if not await asyncio.to_thread(verify_password, password, stored) or user is None or user.disabled:
        raise AuthError("wrong user name or password")
    return await issue_token(user, "session", "login", SESSION_TTL)


async def redeem_login_link(code: str) -> tuple[str, ApiToken, User]:
    """A session for whoever a one-time login link was made for; the link is spent either way."""
    now = datetime.now(UTC)
    link = await ApiToken.get_or_none(token_hash=token_hash(code), kind="link").prefetch_related("user")
    used = await ApiToken.filter(id=link.id, revoked_at=None).update(revoked_at=now) if link else 0
    if link is None or not used or link.expires_at <= now or link.user.disabled:
        raise AuthError("that login link is not valid")
    token, row = await issue_token(link.user, "session", "login link", SESSION_TTL)
    return token, row, link.user


async def issue_token(user: User, kind: str, name: str, ttl: timedelta) -> tuple[str, ApiToken]:
    token = new_token()
    row = await ApiToken.create(user=user, token_hash=token_hash(token), kind=kind, name=name,
                                expires_at=datetime.now(UTC) + ttl)
    return token, row


async def principal_for(token: str) -> Principal:
    row = await ApiToken.get_or_none(token_hash=token_hash(token)).prefetch_related("user")
    now = datetime.now(UTC)
    if row is None or row.kind not in BEARER_KINDS or row.revoked_at is not None or row.expires_at <= now:
        raise AuthError("the token is unknown, expired or revoked")
    user: User = row.user
    if user.disabled:
        raise AuthError("the account is disabled")
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        await ApiToken.filter(id=row.id).update(last_used_at=now)  # at most once a minute
    return Principal(user.id, user.username, Role(user.role))
