"""The agent: wires the state folder, the queue, the link, health, commands and roles together.

    async with Agent(config) as agent:   # opens the state folder, starts every task
        ...                              # agent.outbox, agent.link, agent.roles are live
    # leaving the block stops cleanly: roles stop, the queue drains (bounded), death, disconnect

or `exit_code = await run_agent(config)`, which returns when the agent is told to stop
(`stop` event, or the `reboot` command).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import edge
from edge.backoff import Backoff
from edge.commands import CommandDesk, CommandHandler, Reply
from edge.config import AgentConfig
from edge.desired import DesiredState
from edge.errors import CommandError, ConfigError, DesiredStateError, EdgeError
from edge.fleet_http import FleetHttp
from edge.health import SystemHealth, hardware_description
from edge.link import Link
from edge.ota import Updater
from edge.queue import Outbox
from edge.roles import ROLES, Role, RoleContext, RoleSpec
from edge.stamps import Boot, SessionCounter, Stamper, highest_queued_ses, wall_clock_ms
from edge.statefile import StateDirLock, StateDisk
from edge.uplink import Uplink

log = logging.getLogger(__name__)

STOP_ATTEMPTS = 5  # cancellations sent to a task that does not stop ...
STOP_WAIT_S = 1.0  # ... this long apart

# Exit status asking for a restart (`reboot` command). EX_TEMPFAIL; the systemd unit restarts
# the agent on it (Restart=always, or RestartForceExitStatus=75).
EXIT_RESTART = 75

MIN_PERIOD_S, MAX_PERIOD_S = 1, 86_400
# A failing role is restarted after a delay growing from 1 s to this cap, for as long as it fails.
ROLE_RESTART_MAX_S = 60.0
# While the state folder's disk is full, its free space is looked at this often.
DISK_CHECK_S = 2.0


def _check_period(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_PERIOD_S <= value <= MAX_PERIOD_S:
        raise ValueError(f"{what} must be an integer from {MIN_PERIOD_S} to {MAX_PERIOD_S}")
    return value


class Agent:
    def __init__(self, config: AgentConfig, *, roles: Mapping[str, RoleSpec[Any]] = ROLES) -> None:
        self.config = config
        self._role_specs = roles
        for name, section in config.roles.items():  # refuse a bad config before touching state
            self._spec(name).check(name, section)
        self.fleet = self._fleet_http(config)
        self.exit_code = 0
        self.health_period_s = config.health_period_s
        self._period_changed = asyncio.Event()
        self._disk_changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self._lock = StateDirLock(config.state_dir)
        self._task: asyncio.Task[int] | None = None
        self._opened = False
        self.role_errors: dict[str, int] = {}
        self.roles_started: set[str] = set()
        self._first_health_id: int | None = None  # the queue id of this run's first health message

    @staticmethod
    def _fleet_http(config: AgentConfig) -> FleetHttp | None:
        if config.fleet is None:
            return None
        if config.broker.password is None:
            raise ConfigError("fleet: the device logs in to the fleet with broker.password, which is not set")
        return FleetHttp(config.fleet, config.device_id, config.broker.password.get_secret_value())

    def _spec(self, name: str) -> RoleSpec[Any]:
        try:
            return self._role_specs[name]
        except KeyError:
            known = ", ".join(sorted(self._role_specs)) or "none"
            raise ConfigError(f"roles.{name}: no such role (known: {known})") from None

    # -- state ------------------------------------------------------------------------------

    def open(self) -> None:
        """Take the state folder and build every part; StateError if the folder is unusable."""
        state = self.config.state_dir
        self._lock.acquire()
        try:
            # First, so that on a full disk the reserve is given back before the files below are written.
            self.disk = StateDisk(state, name=self.config.device_id)
            self.disk.on_change = lambda _full: self._disk_changed.set()
            self.disk.prepare()
            self.session = SessionCounter(state / "session.json")
            self.outbox = Outbox(
                state / "outbox.sqlite3",
                max_messages=self.config.queue.max_messages,
                ram_max_bytes=self.config.queue.ram_max_bytes,
                disk=self.disk,
            )
            if self.session.restarted:  # a lost counter: its streams must not reuse those still queued
                self.session.keep_above(highest_queued_ses(self.outbox))
            self.boot: Boot = self.session.start()
            self.stamper = Stamper(self.boot.ses, clock=wall_clock_ms)
            self.uplink = Uplink(self.config.device_id, self.stamper, self.outbox)
            self.roles: dict[str, Role] = {
                name: self._spec(name).create(name, section, RoleContext(name, self.uplink, state, fleet=self.fleet))
                for name, section in self.config.roles.items()
            }
            self.system = SystemHealth(disk_path=state)
            self.hw = self.config.hw or hardware_description()
            self.commands = CommandDesk(
                self.uplink, state / "commands.json", self._command_handlers(), disk=self.disk
            )
            self.desired = DesiredState(
                state / "desired.json", self.uplink, [self, *self.roles.values()], disk=self.disk
            )
            self.desired.restore()
            self.ota = Updater(
                self.config, self.uplink, restart=self.request_restart, running_version=edge.__version__
            )
            self.ota.open()
            self.link = Link(
                self.config,
                session=self.session,
                stamper=self.stamper,
                outbox=self.outbox,
                birth_fields=self._birth_fields,
                handlers={
                    "cmd": self.commands.receive,
                    "state/desired": self.desired.receive,
                    "ota/offer": self.ota.receive,
                },
                disk=self.disk,
            )
        except BaseException:
            outbox: Outbox | None = getattr(self, "outbox", None)
            if outbox is not None:
                outbox.close()
            self._lock.release()
            raise
        self._started = time.monotonic()
        self._opened = True
        log.info(
            "%s: started (agent %s, start %d, stream %d, %d queued, roles: %s)",
            self.config.device_id,
            edge.__version__,
            self.boot.n,
            self.boot.ses,
            self.outbox.depth,
            ", ".join(self.roles) or "none",
        )

    def close(self) -> None:
        if self._opened:
            lost = self.outbox.close()
            self._lock.release()
            self._opened = False
            log.info(
                "%s: stopped (%d queued for next time%s)",
                self.config.device_id,
                self.outbox.depth,
                f"; {lost} held in memory could not be stored (disk full): counted as dropped" if lost else "",
            )

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.open()
        self._task = asyncio.create_task(self.run(), name=f"edge-agent-{self.config.device_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.request_stop()
        try:
            if self._task is not None:
                await self._task
        finally:
            self.close()

    async def wait(self) -> int:
        """Until the agent stops (by `request_stop`, or by a `reboot` command); its exit code."""
        if self._task is None:
            raise RuntimeError("the agent is not running; use `async with Agent(...)`")
        return await asyncio.shield(self._task)

    def request_stop(self) -> None:
        self._stop.set()

    def request_restart(self) -> None:
        self.exit_code = EXIT_RESTART
        self._stop.set()

    async def run(self) -> int:
        """Run every task until a stop is requested; then stop them in order. Needs `open()`."""
        device = self.config.device_id
        async with asyncio.TaskGroup() as tasks:
            link = tasks.create_task(self.link.run(self._stop), name=f"edge-link-{device}")
            producers = [
                tasks.create_task(self._health_loop(), name=f"edge-health-{device}"),
                tasks.create_task(self._disk_loop(), name=f"edge-disk-{device}"),
                tasks.create_task(self.commands.run(), name=f"edge-commands-{device}"),
                tasks.create_task(self.ota.run(self.healthy_for_trial), name=f"edge-ota-{device}"),
                *(
                    tasks.create_task(self._supervise(role), name=f"edge-role-{device}-{role.name}")
                    for role in self.roles.values()
                ),
            ]
            await self._stop.wait()
            for task in producers:  # nothing new is made once the link starts draining
                task.cancel()
            # A library that swallows a cancellation (pymodbus does, in places) would keep its
            # role running and the task group open for ever: cancel again, a bounded few times.
            for _ in range(STOP_ATTEMPTS):
                _, pending = await asyncio.wait(producers, timeout=STOP_WAIT_S)
                if not pending:
                    break
                for task in pending:
                    log.warning("%s: %s did not stop; cancelling it again", device, task.get_name())
                    task.cancel()
            grace = self.config.shutdown_drain_s + self.config.broker.timeout_s
            try:
                async with asyncio.timeout(grace):
                    await link
            except TimeoutError:
                log.warning("%s: the link did not close within %.0f s; cut it", device, grace)
        return self.exit_code

    async def _supervise(self, role: Role) -> None:
        backoff = Backoff(1.0, ROLE_RESTART_MAX_S)
        while True:
            try:
                self.roles_started.add(role.name)
                await role.run()
                return
            except EdgeError as err:
                log.error("%s: role %s failed: %s", self.config.device_id, role.name, err)
            except Exception:
                log.exception("%s: role %s crashed", self.config.device_id, role.name)
            self.role_errors[role.name] = self.role_errors.get(role.name, 0) + 1
            await asyncio.sleep(backoff.next_delay())

    # -- health -----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            try:
                self.uplink.emit("health", self.health_fields())
                if self._first_health_id is None:
                    self._first_health_id = self.outbox.last_id
            except EdgeError as err:  # e.g. a role reporting a figure that is not a number
                log.error("%s: could not make health: %s", self.config.device_id, err)
            self._period_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.health_period_s):
                    await self._period_changed.wait()

    def healthy_for_trial(self) -> bool:
        """A new version's health gate (docs/ota.md): connected, birth sent (the link is connected
        only after the birth's PUBACK), every role started and none crashed, and this run's first
        health message acknowledged by the broker."""
        return (
            self.link.connected.is_set()
            and self.roles_started == set(self.roles)
            and not self.role_errors
            and self._first_health_id is not None
            and self.outbox.acked_through >= self._first_health_id
        )

    def health_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "up_s": int(time.monotonic() - self._started),
            "fw": edge.__version__,
            **self.system.sample(),
            "queue": self.outbox.depth,
            "dropped": self.outbox.dropped,
            "reconnects": self.link.reconnects,
            "disk_full": self.disk.full,
        }
        roles = {
            name: {**role.health(), "errors": self.role_errors.get(name, 0)}
            for name, role in self.roles.items()
        }
        if roles:
            fields["roles"] = roles
        return fields

    # -- a full disk (docs/edge.md, "A full disk") ----------------------------------------------

    async def _disk_loop(self) -> None:
        """Report each change of the disk_full state (an event, and health at once); while full,
        look at the free space every DISK_CHECK_S and give the queue its file back when it allows."""
        reported = False
        while True:
            self._disk_changed.clear()
            if self.disk.full != reported:
                reported = self.disk.full
                self._report_disk(reported)
            if not self.disk.full:
                await self._disk_changed.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISK_CHECK_S):
                    await self._disk_changed.wait()
            if self.disk.full and self.disk.room_to_resume(self.outbox.room_needed()):
                moved = self.outbox.resume()
                if moved is not None:
                    self.disk.recovered(
                        f"{moved} messages moved from memory into the queue, {self.outbox.dropped} dropped in all"
                    )

    def _report_disk(self, full: bool) -> None:
        data: dict[str, Any] = {"free_bytes": self.disk.free_bytes(), "dropped": self.outbox.dropped}
        if full:
            data["error"] = self.disk.error or "unknown"
        self.uplink.event(
            event_id=f"disk-full-{self.boot.ses}-{self.disk.episodes}",
            event_type="disk_full",
            phase="start" if full else "end",
            category="other",
            data=data,
        )
        self._period_changed.set()  # health now, with the new disk_full

    def set_health_period(self, period_s: int) -> None:
        self.health_period_s = period_s
        self._period_changed.set()

    def _birth_fields(self) -> dict[str, Any]:
        return {
            "kind": "pi",
            "fw": edge.__version__,
            "roles": list(self.roles),
            "boot": {"n": self.boot.n, "reason": "start"},
            "hw": self.hw,
            "period_s": self.health_period_s,
        }

    # -- the agent's own desired-state keys --------------------------------------------------

    def check_desired(self, doc: Mapping[str, Any]) -> None:
        if "health_period_s" in doc:
            try:
                _check_period(doc["health_period_s"], "health_period_s")
            except ValueError as err:
                raise DesiredStateError(str(err)) from err

    def apply_desired(self, doc: Mapping[str, Any]) -> None:
        self.set_health_period(doc.get("health_period_s", self.config.health_period_s))

    # -- commands ---------------------------------------------------------------------------

    def _command_handlers(self) -> dict[str, CommandHandler]:
        handlers: dict[str, CommandHandler] = {
            "ping": self._ping,
            "set_health_period": self._set_health_period,
            "reboot": self._reboot,
        }
        for role in self.roles.values():
            for name, handler in role.commands().items():
                handlers[f"{role.name}.{name}"] = handler
        return handlers

    async def _ping(self, args: Mapping[str, Any]) -> Reply:
        return Reply({"up_s": int(time.monotonic() - self._started), "fw": edge.__version__})

    async def _set_health_period(self, args: Mapping[str, Any]) -> Reply:
        try:
            period = _check_period(args.get("period_s"), "period_s")
        except ValueError as err:
            raise CommandError(str(err)) from err
        self.set_health_period(period)
        return Reply({"period_s": period})

    async def _reboot(self, args: Mapping[str, Any]) -> Reply:
        # The agent restarts (the service manager starts it again), not the machine.
        return Reply({"restart": "agent"}, after=self.request_restart)


async def run_agent(
    config: AgentConfig, *, stop: asyncio.Event | None = None, roles: Mapping[str, RoleSpec[Any]] = ROLES
) -> int:
    """Run one agent until `stop` is set (or a `reboot` command); its exit code (0, or
    EXIT_RESTART). Several can run in one event loop, each with its own state folder."""
    async with Agent(config, roles=roles) as agent:
        if stop is None:
            return await agent.wait()
        forward = asyncio.create_task(_stop_when(stop, agent), name=f"edge-stop-{config.device_id}")
        try:
            return await agent.wait()
        finally:
            forward.cancel()


async def _stop_when(stop: asyncio.Event, agent: Agent) -> None:
    await stop.wait()
    agent.request_stop()
