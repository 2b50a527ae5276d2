"""Device-facing endpoints' dependency: `Authorization: Basic <device id:MQTT password>`
(fleet/auth/device_http.py has the rules)."""

import base64
import binascii
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from fleet.api.deps import source_of, too_many
from fleet.auth.device_http import DeviceAuthError, DeviceHttpAuth
from fleet.auth.throttle import Throttled
from fleet.models import Device

REALM = 'Basic realm="ioc-fleet devices", charset="UTF-8"'
HEADER_MAX = 512


def device_auth_of(request: Request) -> DeviceHttpAuth:
    found: DeviceHttpAuth | None = getattr(request.app.state, "device_http_auth", None)
    if found is None:  # made on first use, so every app (and every test's app) has its own
        found = request.app.state.device_http_auth = DeviceHttpAuth()
    return found


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": REALM})


async def authenticated_device(request: Request) -> Device:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded or len(header) > HEADER_MAX:
        raise _unauthorized("send 'Authorization: Basic' with the device id and its MQTT password")
    try:
        device_id, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise _unauthorized("the Basic credentials are not base64 of 'device id:password' in UTF-8") from err
    if not colon:
        raise _unauthorized("the Basic credentials are not base64 of 'device id:password' in UTF-8")
    try:
        return await device_auth_of(request).authenticate(device_id, password, source_of(request))
    except Throttled as err:
        raise too_many(err) from err
    except DeviceAuthError as err:
        if err.status == status.HTTP_401_UNAUTHORIZED:
            raise _unauthorized(str(err)) from err
        raise HTTPException(err.status, str(err)) from err


AuthenticatedDevice = Annotated[Device, Depends(authenticated_device)]
