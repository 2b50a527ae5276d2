"""People and their roles (admins only), and the audit log."""

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field
from tortoise.exceptions import IntegrityError

from fleet.api.deps import LOGGED_IN, Auditor, acting, permitted
from fleet.api.errors import answer
from fleet.api.schemas import patch_field
from fleet.auth.people import PasswordPolicyError, Principal, check_password_policy, create_user
from fleet.auth.roles import Permission, Role
from fleet.auth.secrets import hash_password
from fleet.models import ApiToken, AuditEntry, User

router = APIRouter(tags=["people"], dependencies=[LOGGED_IN])
Admin = Annotated[Auditor, acting(Permission.USERS)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[a-z][a-z0-9._-]{1,63}$")
    full_name: str = Field(default="", max_length=120)
    role: Role
    password: str = Field(min_length=1, max_length=256)


class UserUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")
    full_name: str = patch_field(max_length=120)
    role: Role = patch_field()
    disabled: bool = patch_field()
    password: str = patch_field(min_length=1, max_length=256)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    username: str
    full_name: str
    role: Role
    disabled: bool
    created_at: datetime


class AuditPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    at: datetime
    actor: str
    action: str
    target: str
    detail: Any
    source: str


@router.post("/api/users", status_code=status.HTTP_201_CREATED,
             responses={409: answer("a user with this name already exists")})
async def add_user(body: UserCreate, audit: Admin) -> UserPublic:
    try:
        user = await create_user(body.username, body.password, body.role, body.full_name)
    except PasswordPolicyError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} already exists") from err
    await audit("user.create", body.username, {"role": body.role.value})
    return UserPublic.model_validate(user)


@router.get("/api/users")
async def list_users(_: Annotated[Principal, permitted(Permission.USERS)]) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in await User.all().order_by("username")]


@router.patch("/api/users/{username}")
async def update_user(username: Annotated[str, Path(min_length=1, max_length=64)], body: UserUpdate,
                      audit: Admin) -> UserPublic:
    user = await User.get_or_none(username=username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    password: str | None = body.password if "password" in body.model_fields_set else None
    if password is not None:
        try:
            check_password_policy(password, username)
        except PasswordPolicyError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
        user.password_hash = await asyncio.to_thread(hash_password, password)
    if "role" in changes:
        changes["role"] = changes["role"].value
    user.update_from_dict(changes)
    await user.save()
    if changes.get("disabled") or password is not None or "role" in changes:
        # a changed role, password or a disabled account ends every session and token
        await ApiToken.filter(user_id=user.id, revoked_at=None).update(revoked_at=datetime.now().astimezone())
    await audit("user.update", username, {**changes, **({"password": "changed"} if password else {})})
    return UserPublic.model_validate(user)


@router.get("/api/audit")
async def read_audit(
    _: Annotated[Principal, permitted(Permission.AUDIT)],
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64, description="actions starting with this")] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[AuditPublic]:
    """Newest first."""
    query = AuditEntry.all()
    if actor:
        query = query.filter(actor=actor)
    if action:
        query = query.filter(action__startswith=action)
    if target:
        query = query.filter(target=target)
    return [AuditPublic.model_validate(e) for e in await query.order_by("-id").limit(limit)]
