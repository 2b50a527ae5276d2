"""The same rules on the embedded broker (amqtt): accounts and topics checked by the fleet itself.

amqtt loads plugins by class path; the live `EmbeddedAuthority` reaches them through their
config. Anonymous clients are refused; devices log in with their id as both user name and client
id and the password the fleet issued; the fleet's own link uses a service password made fresh at
every start and the fleet's client ids (FLEET_MQTT_CLIENT_ID and its `-accounts` twin), which no
device may use.
"""

import logging
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from contract.acl import (
    device_may_publish,
    device_may_subscribe,
    fleet_may_publish,
    fleet_may_subscribe,
)
from contract.topics import is_valid_device_id
from fleet.broker_auth.accounts import FLEET_USER as FLEET_USER  # where the fleet has always imported it
from fleet.broker_auth.accounts import fleet_client_ids, reserved_for_fleet
from fleet.broker_auth.admission import BrokerBounds
from fleet.broker_auth.limits import DEVICE_PAYLOAD_MAX, FLEET_PAYLOAD_MAX
from fleet.broker_auth.password_checks import Check, PasswordChecker
from fleet.models import DeviceCredential
from fleet.settings import Settings

log = logging.getLogger(__name__)


class Login(Enum):
    OK = "accepted"
    REFUSED = "refused"
    BUSY = "busy"


@dataclass(frozen=True)
class LoginAttempt:
    username: str | None
    password: str | None
    client_id: str
    will_topic: str | None = None
    will_payload: bytes | None = None


class EmbeddedAuthority:
    """Decides logins and topic access for the embedded broker."""

    def __init__(self, *, fleet_client_id: str = "fleet-ingest", bounds: BrokerBounds | None = None,
                 checker: PasswordChecker | None = None) -> None:
        self.fleet_password = secrets.token_urlsafe(24)
        self.fleet_client_id = fleet_client_id
        self.bounds = bounds or BrokerBounds()
        self.checker = checker or PasswordChecker()

    @classmethod
    def from_settings(cls, settings: Settings) -> "EmbeddedAuthority":
        return cls(fleet_client_id=settings.mqtt_client_id, bounds=BrokerBounds(
            max_connections=settings.embedded_broker_max_connections,
            connect_timeout_s=settings.embedded_broker_connect_timeout_s,
            connects_per_s=settings.embedded_broker_connects_per_s,
            connect_burst=settings.embedded_broker_connect_burst))

    def is_fleet_client_id(self, client_id: str) -> bool:
        return client_id in fleet_client_ids(self.fleet_client_id)

    def reserved(self, device_id: str) -> bool:
        return reserved_for_fleet(device_id, fleet_username=FLEET_USER, fleet_client_id=self.fleet_client_id)

    async def login(self, attempt: LoginAttempt) -> Login:
        """Cheap checks first (names, client id, will), the password last and off the loop."""
        username, password = attempt.username, attempt.password
        if not username or not password:
            return Login.REFUSED  # anonymous access is off
        if username == FLEET_USER:
            ok = (self.is_fleet_client_id(attempt.client_id) and self._will_ok(attempt)
                  and secrets.compare_digest(password.encode(), self.fleet_password.encode()))
            return Login.OK if ok else Login.REFUSED
        # a device: its client id is its device id, so it can neither take over another
        # device's session nor the fleet's
        if (not is_valid_device_id(username) or self.reserved(username) or attempt.client_id != username
                or not self._will_ok(attempt)):
            return Login.REFUSED
        credential = await DeviceCredential.get_or_none(device_id=username, revoked_at=None)
        if credential is None:
            return Login.REFUSED
        check = await self.checker.check(username, password, credential.secret_hash)
        return {Check.OK: Login.OK, Check.WRONG: Login.REFUSED, Check.BUSY: Login.BUSY}[check]

    def _will_ok(self, attempt: LoginAttempt) -> bool:
        """amqtt publishes a will without asking the topic plugin: judge it at CONNECT instead."""
        if attempt.will_topic is None:
            return attempt.will_payload is None
        payload = attempt.will_payload or b""
        return (len(payload) <= self.payload_limit(attempt.username)
                and self.allowed(attempt.username, attempt.will_topic, "publish"))

    def payload_limit(self, username: str | None) -> int:
        return FLEET_PAYLOAD_MAX if username == FLEET_USER else DEVICE_PAYLOAD_MAX

    def forget(self, device_id: str) -> None:
        """The device's credentials changed: no remembered login may stand for it."""
        self.checker.forget(device_id)

    def close(self) -> None:
        self.checker.close()

    def allowed(self, username: str | None, topic: str, action: str) -> bool:
        if username == FLEET_USER:
            if action == "publish":
                return fleet_may_publish(topic)
            return fleet_may_subscribe(topic) if action == "subscribe" else True
        if not username:
            return False
        if action == "publish":
            return device_may_publish(username, topic)
        if action == "subscribe":
            return device_may_subscribe(username, topic)
        return device_may_subscribe(username, topic)  # receive: only its own downstream topics


class FleetAuthPlugin(BaseAuthPlugin):
    """amqtt's own login check. Every TCP client has passed the same check at the broker's gate
    (fleet/broker.py) before amqtt saw it; this repeats it (a remembered success, no scrypt) so
    that no path into amqtt skips it."""

    @dataclass
    class Config:
        authority: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        authority: EmbeddedAuthority = self.context.config.authority
        attempt = LoginAttempt(session.username, session.password, session.client_id or "",
                               session.will_topic if session.will_flag else None,
                               bytes(session.will_message) if session.will_flag and session.will_message else None)
        return await authority.login(attempt) is Login.OK


class FleetTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        authority: Any = None

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        authority: EmbeddedAuthority = self.context.config.authority
        if session is None or topic is None or action is None:
            return False
        allowed = authority.allowed(session.username, topic, action.value)
        if not allowed:
            log.warning("embedded broker refused %s %r for %r", action.value, topic[:120], session.username)
        return allowed
