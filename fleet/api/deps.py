"""Dependencies shared by the routes, as Annotated aliases."""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Path, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contract import DEVICE_ID_PATTERN
from fleet.api.csrf import refuse_cross_site
from fleet.auth import audit
from fleet.auth.people import SESSION_TTL, AuthError, Principal, login, principal_for
from fleet.auth.roles import Permission
from fleet.auth.throttle import Attempt, Guards, Lock, Refusal, Throttled
from fleet.models import ApiToken, Device
from fleet.runtime import Runtime

SESSION_COOKIE = "ioc_session"
_bearer = HTTPBearer(auto_error=False, description="an API token or a login session token")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    token = credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE)
    if token and not credentials:  # the browser's cookie: it must not act for another site
        refuse_cross_site(request)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in or send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    try:
        return await principal_for(token)
    except AuthError as err:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(err),
                            headers={"WWW-Authenticate": "Bearer"}) from err


PrincipalDep = Annotated[Principal, Depends(get_principal)]
# on a router: nobody learns anything (not even whether a device exists) before logging in
LOGGED_IN = Depends(get_principal)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if not principal.may(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"role {principal.role.value!r} may not do this (needs {permission.value!r})")
        return principal

    return check


def permitted(permission: Permission) -> Any:
    """`Annotated[Principal, permitted(P)]`: the caller, who must hold permission P."""
    return Depends(require(permission))


Reader = Annotated[Principal, permitted(Permission.READ)]


def source_of(request: Request) -> str:
    return request.client.host if request.client else ""


def guards_of(request: Request) -> Guards:
    """The throttles of this fleet process (in memory: docs/identity.md "Throttling")."""
    guards: Guards | None = getattr(request.app.state, "guards", None)
    if guards is None:  # made on first use, so every app (and every test's app) has its own
        guards = request.app.state.guards = Guards()
    return guards


def too_many(err: Throttled) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(err),
                         headers={"Retry-After": str(err.refusal.retry_after_s)})


async def record_locks(actor: str, action: str, locks: list[Lock], source: str) -> None:
    """One audit row per lock started: refusals during a lock are counted in the next one."""
    for lock in locks:
        await audit.record(actor, action, lock.scope, {"failures": lock.failures,
                                                       "refused_meanwhile": lock.refused_meanwhile,
                                                       "retry_after_s": lock.retry_after_s}, source)


async def open_session(request: Request, username: str, password: str) -> tuple[str, ApiToken]:
    """Log a person in (AuthError if refused, Throttled if guessing is being slowed down).

    Every attempt that gets to the password check is audited; refusals by the throttle are not
    one by one (that would let a guesser flood the log) but counted in the next lock's row.
    """
    source = source_of(request)
    guard = guards_of(request).login
    admitted: Attempt | Refusal = guard.admit(source, username)
    if isinstance(admitted, Refusal):
        raise Throttled(admitted)
    ok: bool | None = None
    try:
        session = await login(username, password)
        ok = True
    except AuthError:
        ok = False
        raise
    finally:
        locks = guard.done(admitted, ok=ok)
        if ok is False:
            await audit.record(username, "auth.login.failed", "", None, source)
            await record_locks(username, "auth.login.throttled", locks, source)
    await audit.record(username, "auth.login", "", None, source)
    return session


def set_session_cookie(response: Response, token: str, request: Request, *,
                       samesite: Literal["strict"] = "strict") -> None:
    """The pages' session: HttpOnly, SameSite=Strict (no other value: a link from another site
    opens the pages logged out), Secure over HTTPS or when FLEET_COOKIE_SECURE says a TLS proxy
    is in front. Cross-site use from the same site is refused by fleet.api.csrf."""
    secure = request.url.scheme == "https" or get_runtime(request).settings.cookie_secure
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_TTL.total_seconds()), path="/",
                        httponly=True, samesite=samesite, secure=secure)


class Auditor:
    """Records a change with the acting person and the client's address."""

    def __init__(self, request: Request, principal: Principal) -> None:
        self.actor = principal.username
        self.source = source_of(request)

    async def __call__(self, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        await audit.record(self.actor, action, target, detail, self.source)


# row ids are 32-bit columns: a larger number in a path is refused (422), not sent to the database
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
DeviceId = Annotated[str, Path(pattern=f"^{DEVICE_ID_PATTERN}$", description="lower-case device id, 2-63 chars")]


async def get_device(device_id: DeviceId) -> Device:
    device = await Device.get_or_none(id=device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    return device


DeviceDep = Annotated[Device, Depends(get_device)]


def acting(permission: Permission) -> Any:
    """A dependency for a route that changes something: checks the role, returns an Auditor."""
    checker = require(permission)

    async def dependency(request: Request, principal: Annotated[Principal, Depends(checker)]) -> Auditor:
        return Auditor(request, principal)

    return Depends(dependency)
