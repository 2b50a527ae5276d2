"""The fleet service's HTTP API, as provisioning uses it (httpx, synchronous).

HTTP and network failures become the package's errors here: `FleetUnreachable`, `NotAuthorised`,
`TokenRefused`, `FleetRefused`. Nothing above this module sees an httpx exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from provisioning.errors import FleetRefused, FleetUnreachable, NotAuthorised, TokenRefused


@dataclass(frozen=True)
class MqttCredentials:
    device_id: str
    username: str
    password: str
    host: str
    port: int
    tls: bool

    @classmethod
    def from_body(cls, body: Any) -> MqttCredentials:
        try:
            mqtt = body["mqtt"]
            return cls(device_id=str(body["device_id"]), username=str(mqtt["username"]),
                       password=str(mqtt["password"]), host=str(mqtt["host"]), port=int(mqtt["port"]),
                       tls=bool(mqtt.get("tls", False)))
        except (KeyError, TypeError, ValueError) as err:
            raise FleetRefused("the fleet's credentials answer is not what this tool expects") from err


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item)
                           for item in detail)
    return str(detail) if detail else (response.reason_phrase or f"HTTP {response.status_code}")


class FleetClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport)
        self._has_token = bool(token)

    @property
    def can_read(self) -> bool:
        """Whether device state can be asked for (that needs an API token; enrolling does not)."""
        return self._has_token

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, json: Any = None, auth: bool = True,
                 ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.TransportError as err:
            raise FleetUnreachable(f"cannot reach the fleet at {self.base_url} ({type(err).__name__}: "
                                   f"{err or 'no answer'}); use --offline with an enrollment token "
                                   "to flash without it") from err
        if response.status_code in ok:
            return response
        if auth and response.status_code in (401, 403):
            if not self._has_token:
                raise NotAuthorised("the fleet needs an API token: pass --token or set PROVISION_API_TOKEN")
            raise NotAuthorised(f"the fleet refused the API token: {_detail(response)}")
        detail = _detail(response)
        raise FleetRefused(f"the fleet refused {method} {path}: {detail} (HTTP {response.status_code})",
                           status=response.status_code, detail=detail)

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as err:
            raise FleetRefused(f"the fleet answered {response.request.url.path} with something "
                               "that is not JSON") from err

    def create_device(self, device_id: str, kind: str, *, name: str = "", ward: str = "",
                      site: str = "", tags: list[str] | None = None) -> dict[str, Any]:
        body = {"id": device_id, "kind": kind, "name": name, "ward": ward, "site": site,
                "tags": tags or []}
        result: dict[str, Any] = self._json(self._request("POST", "/api/devices", json=body))
        return result

    def issue_credentials(self, device_id: str) -> MqttCredentials:
        return MqttCredentials.from_body(
            self._json(self._request("POST", f"/api/devices/{device_id}/credentials")))

    def revoke_credentials(self, device_id: str) -> None:
        self._request("POST", f"/api/devices/{device_id}/credentials/revoke", ok=(200, 204))

    def enroll(self, token: str, device_id: str | None = None, name: str | None = None) -> MqttCredentials:
        body: dict[str, Any] = {"token": token}
        if device_id is not None:
            body["device_id"] = device_id
        if name:
            body["name"] = name
        try:
            response = self._request("POST", "/api/enroll", json=body, auth=False)
        except FleetRefused as err:
            if err.status in (401, 403, 404, 410):
                raise TokenRefused(f"the enrollment token was refused: {err.detail}") from err
            raise
        return MqttCredentials.from_body(self._json(response))

    def create_enrollment_token(self, kind: str, site: str, *, ward: str = "", device_id: str | None = None,
                                ttl_hours: int = 72) -> tuple[int, str]:
        """A single-use enrollment token (needs the enrollment permission: ops); (its id, the token)."""
        body: dict[str, Any] = {"kind": kind, "site": site, "ward": ward, "ttl_hours": ttl_hours}
        if device_id is not None:
            body["device_id"] = device_id
        answer = self._json(self._request("POST", "/api/enrollment-tokens", json=body))
        try:
            return int(answer["id"]), str(answer["token"])
        except (KeyError, TypeError, ValueError) as err:
            raise FleetRefused("the fleet's enrollment token answer is not what this tool expects") from err

    def revoke_enrollment_token(self, token_id: int) -> None:
        self._request("DELETE", f"/api/enrollment-tokens/{token_id}", ok=(200, 204))

    def get_device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self._request("GET", f"/api/devices/{device_id}"))
        return result

    def find_device(self, device_id: str) -> dict[str, Any] | None:
        """The device's record, or None if the fleet has none with this id."""
        try:
            return self.get_device(device_id)
        except FleetRefused as err:
            if err.status == 404:
                return None
            raise

    def update_device(self, device_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self._request("PATCH", f"/api/devices/{device_id}", json=changes))
        return result

    def wait_for_birth(self, device_id: str, timeout: float, *, interval: float = 0.25,
                       tick: Callable[[], None] | None = None) -> dict[str, Any] | None:
        """Poll until the fleet has the device's birth and holds it online; None at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            device = self.get_device(device_id)
            if device.get("last_birth_at") and device.get("online"):
                return device
            if time.monotonic() >= deadline:
                return None
            if tick is not None:
                tick()
            time.sleep(interval)

    def check(self, device_id: str) -> dict[str, Any]:
        """The checks at the pole: {"overall", "items": [{"item", "status", "detail"}], ...}."""
        result: dict[str, Any] = self._json(self._request("GET", f"/api/devices/{device_id}/check"))
        return result

    def install_test(self, device_id: str, action: str, seconds: int | None = None) -> dict[str, Any]:
        """Send an install-time test (lamp_on, test_tone); the command's record."""
        body: dict[str, Any] = {"action": action}
        if seconds is not None:
            body["seconds"] = seconds
        result: dict[str, Any] = self._json(
            self._request("POST", f"/api/devices/{device_id}/install-test", json=body, ok=(202,)))
        return result

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self._request("GET", f"/api/assets/{asset_id}"))
        return result

    def swap_asset(self, asset_id: str, new_device_id: str) -> dict[str, Any]:
        """Swap the asset's device for `new_device_id` (docs/assets.md); done already: `already_done`."""
        result: dict[str, Any] = self._json(self._request("POST", f"/api/assets/{asset_id}/swap",
                                                          json={"new_device_id": new_device_id}))
        return result

    def get_desired(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self._request("GET", f"/api/devices/{device_id}/desired"))
        return result
