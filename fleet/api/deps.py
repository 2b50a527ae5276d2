"""Dependencies shared by the routes, as Annotated aliases."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from fleet.models import Device
from fleet.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_device(device_id: str) -> Device:
    device = await Device.get_or_none(id=device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    return device


DeviceDep = Annotated[Device, Depends(get_device)]
