"""Logging in, and API tokens for tools."""

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import (
    SESSION_COOKIE,
    PrincipalDep,
    RowId,
    open_session,
    set_session_cookie,
    source_of,
    too_many,
)
from fleet.auth import audit
from fleet.auth.people import LINK_TTL, AuthError, issue_token
from fleet.auth.roles import ROLE_PERMISSIONS
from fleet.auth.secrets import token_hash
from fleet.auth.throttle import Throttled
from fleet.models import ApiToken, User

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenPublic(BaseModel):
    token: str = Field(description="shown once; store it")
    expires_at: datetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80, description="what the token is for, e.g. 'laptop provisioning'")
    ttl_days: int = Field(default=90, ge=1, le=365)


class TokenInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    name: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class Me(BaseModel):
    username: str
    role: str
    permissions: list[str]


@router.post("/login", responses={429: {"description": "too many failed log-ins: wait Retry-After seconds"}})
async def log_in(body: LoginRequest, request: Request, response: Response) -> TokenPublic:
    """A session token (also set as an HttpOnly cookie for the web pages)."""
    try:
        token, row = await open_session(request, body.username, body.password)
    except Throttled as err:
        raise too_many(err) from err
    except AuthError as err:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(err)) from err
    set_session_cookie(response, token, request, samesite="strict")
    return TokenPublic(token=token, expires_at=row.expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def log_out(principal: PrincipalDep, request: Request, response: Response) -> None:
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.cookies.get(
        SESSION_COOKIE, "")
    await ApiToken.filter(token_hash=token_hash(token)).update(revoked_at=datetime.now().astimezone())
    response.delete_cookie(SESSION_COOKIE)
    await audit.record(principal.username, "auth.logout", "", None, source_of(request))


class LoginLink(BaseModel):
    url: str = Field(description="opens a session in a browser; once, within 60 s. The code rides in "
                                 "the URL fragment, which browsers never send: the login page POSTs "
                                 "it to /login/link")
    expires_at: datetime


@router.post("/login-link", status_code=status.HTTP_201_CREATED)
async def create_login_link(principal: PrincipalDep, request: Request) -> LoginLink:
    """A one-time link that logs a browser in as the caller (for kiosks, scripts, headless checks).

    It is redeemed only by `POST /login/link` (form field `code`), once, within its lifetime;
    it is never accepted as a bearer token or a session cookie.
    """
    user = await User.get(id=principal.user_id)
    token, row = await issue_token(user, "link", "login link", LINK_TTL)
    await audit.record(principal.username, "auth.login_link.create", "", None, source_of(request))
    return LoginLink(url=f"/login#code={token}", expires_at=row.expires_at)


@router.get("/me")
async def me(principal: PrincipalDep) -> Me:
    return Me(username=principal.username, role=principal.role.value,
              permissions=sorted(p.value for p in ROLE_PERMISSIONS[principal.role]))


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_api_token(body: TokenCreate, principal: PrincipalDep, request: Request) -> TokenPublic:
    """A long-lived token for a tool (the provisioning CLI), with the caller's own role."""
    user = await User.get(id=principal.user_id)
    token, row = await issue_token(user, "api", body.name, timedelta(days=body.ttl_days))
    await audit.record(principal.username, "auth.token.create", body.name, {"id": row.id}, source_of(request))
    return TokenPublic(token=token, expires_at=row.expires_at)


@router.get("/tokens")
async def list_api_tokens(principal: PrincipalDep) -> list[TokenInfo]:
    rows = await ApiToken.filter(user_id=principal.user_id).order_by("-id")
    return [TokenInfo.model_validate(r) for r in rows]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_token(token_id: RowId, principal: PrincipalDep, request: Request) -> None:
    updated = await ApiToken.filter(id=token_id, user_id=principal.user_id, revoked_at=None).update(
        revoked_at=datetime.now().astimezone())
    if not updated:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live token {token_id} of yours")
    await audit.record(principal.username, "auth.token.revoke", str(token_id), None, source_of(request))


