"""The embedded broker on its own (no HTTP, no ingest), in a thread, with its credential table.

For tests that need to be the fleet's account on the embedded broker (a subscriber that sees
what devices send, retained messages included): the fleet makes that account's password at each
start and never shows it, so the test runs the broker itself and knows it.
"""

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fleet.auth.secrets import hash_password, new_device_password
from fleet.broker import embedded_broker
from fleet.broker_auth.admission import BrokerBounds
from fleet.broker_auth.embedded import FLEET_USER, EmbeddedAuthority
from fleet.db import database
from fleet.models import DeviceCredential
from fleet.settings import Settings
from tests.support.loop_thread import LoopThread
from tests.support.mosquitto import free_port

T = TypeVar("T")


@dataclass
class StandaloneBroker:
    port: int
    authority: EmbeddedAuthority
    loop: asyncio.AbstractEventLoop

    @property
    def fleet_login(self) -> tuple[str, str, str]:
        """(user name, password, client id) of the fleet's account."""
        return FLEET_USER, self.authority.fleet_password, self.authority.fleet_client_id

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def issue(self, device_id: str) -> str:
        """A live credential for `device_id`, as the fleet stores it; returns the password."""
        password = new_device_password()

        async def store() -> None:
            await DeviceCredential.create(device_id=device_id, secret_hash=hash_password(password),
                                          created_by="test")

        self.run(store())
        return password


@contextmanager
def standalone_embedded_broker(tmp_path: Path, bounds: BrokerBounds | None = None) -> Iterator[StandaloneBroker]:
    port = free_port()
    settings = Settings(database_url=f"sqlite://{tmp_path / 'broker.sqlite3'}")
    authority = EmbeddedAuthority(fleet_client_id="fleet-standalone", bounds=bounds)
    @asynccontextmanager
    async def broker() -> AsyncIterator[None]:
        async with database(settings), embedded_broker("127.0.0.1", port, authority):
            yield

    service = LoopThread("embedded-broker", broker)
    service.start(30)
    assert service.loop is not None
    try:
        yield StandaloneBroker(port, authority, service.loop)
    finally:
        service.stop(30)
