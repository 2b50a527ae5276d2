"""The same rules on the embedded broker (amqtt): accounts and topics checked by the fleet itself.

amqtt loads plugins by class path; the live `EmbeddedAuthority` reaches them through their
config. Anonymous clients are refused; devices log in with their id and the password the fleet
issued; the fleet's own link uses a service password made fresh at every start.
"""

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from fleet.auth.secrets import verify_password
from fleet.contract.acl import (
    device_may_publish,
    device_may_subscribe,
    fleet_may_publish,
    fleet_may_subscribe,
)
from fleet.contract.topics import is_valid_device_id
from fleet.models import DeviceCredential

log = logging.getLogger(__name__)

FLEET_USER = "ioc-fleet"


class EmbeddedAuthority:
    """Decides logins and topic access for the embedded broker."""

    def __init__(self) -> None:
        self.fleet_password = secrets.token_urlsafe(24)

    async def authenticate(self, username: str | None, password: str | None) -> bool:
        if not username or not password:
            return False  # anonymous access is off
        if username == FLEET_USER:
            return secrets.compare_digest(password, self.fleet_password)
        if not is_valid_device_id(username):
            return False
        credential = await DeviceCredential.get_or_none(device_id=username, revoked_at=None)
        return credential is not None and verify_password(password, credential.secret_hash)

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
    @dataclass
    class Config:
        authority: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        authority: EmbeddedAuthority = self.context.config.authority
        ok = await authority.authenticate(session.username, session.password)
        if not ok:
            log.warning("embedded broker refused a login as %r", session.username)
        return ok


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
            log.warning("embedded broker refused %s %s for %r", action.value, topic, session.username)
        return allowed
