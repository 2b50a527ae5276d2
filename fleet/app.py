"""The fleet service: database, broker link, ingest and the HTTP app, with one lifecycle."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from fleet import __version__
from fleet.api import errors
from fleet.api.csrf import CrossSiteGuard
from fleet.api.guard import RequestGuard
from fleet.api.headers import SecurityHeaders
from fleet.api.routes import assets as asset_routes
from fleet.api.routes import (
    audio,
    auth,
    broadcasts,
    cap,
    control,
    data,
    device_check,
    device_history,
    device_series,
    devices,
    emergency,
    enrollment,
    gis,
    ingest,
    ops_alerts,
    ops_channels,
    relay,
    relay_feed,
    releases,
    rollouts,
    snapshots,
    users,
    ward_volumes,
)
from fleet.api.routes import children as children_routes
from fleet.api.routes import metrics as metrics_route
from fleet.api.routes import receipts as receipt_routes
from fleet.api.routes import reports as report_routes
from fleet.broadcast.clocks import ClockKeeper
from fleet.broadcast.delivery import Delivery
from fleet.broadcast.emergency import register as register_emergencies
from fleet.broadcast.receipts import ReceiptSweep
from fleet.broadcast.service import BroadcastWorker
from fleet.broker import EmbeddedAccounts, embedded_broker
from fleet.broker_auth.accounts import AccountsError, BrokerAccounts, UncheckedAccounts
from fleet.broker_auth.dynsec import DynsecAccounts
from fleet.broker_auth.embedded import FLEET_USER, EmbeddedAuthority
from fleet.broker_auth.nats import NatsAccounts
from fleet.db import database
from fleet.ingest.health import ingest_health
from fleet.ingest.link import MqttLink
from fleet.ingest.service import Ingest
from fleet.ingest.silence import SilenceSweep, hearing_of, timing_of
from fleet.ingest.stats import IngestStats
from fleet.ingest.supervisor import Supervisor
from fleet.lease import Leases
from fleet.ops import metrics as ops_metrics
from fleet.ops import service as ops_service
from fleet.ops.alerts import ensure_builtin_rules
from fleet.ota.rollouts import RolloutEngine
from fleet.relay.feed import FeedHub
from fleet.relay.metrics import RelayCollector, relay_families
from fleet.relay.service import RelayWorker
from fleet.runtime import Runtime
from fleet.settings import MqttTarget, Settings
from fleet.tasks import stop_tasks
from fleet.web import (
    alert_pages,
    asset_pages,
    audio_pages,
    broadcast_pages,
    check_pages,
    docs,
    emergency_pages,
    live_pages,
    map_pages,
    ops_pages,
    pages,
    relay_pages,
    report_pages,
    rollout_pages,
    rule_pages,
)

log = logging.getLogger(__name__)


@asynccontextmanager
async def fleet_services(settings: Settings) -> AsyncIterator[Runtime]:
    """Start everything the API needs; stop it in reverse order, storing what was received."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(database(settings))
        target = settings.mqtt_target()
        ca_file = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
        accounts: BrokerAccounts
        protocol = settings.mqtt_protocol
        if target is None:
            protocol = "3.1.1"  # amqtt speaks no MQTT 5
            authority = EmbeddedAuthority.from_settings(settings)
            broker = await stack.enter_async_context(
                embedded_broker(settings.embedded_broker_host, settings.embedded_broker_port, authority))
            public = MqttTarget(broker.url)
            target = MqttTarget(broker.url.replace("mqtt://", f"mqtt://{FLEET_USER}:{authority.fleet_password}@"))
            accounts = EmbeddedAccounts(broker)
        else:
            public = target
            if settings.broker_accounts == "dynsec":
                accounts = await stack.enter_async_context(
                    DynsecAccounts(target, client_id=f"{settings.mqtt_client_id}-accounts", ca_file=ca_file,
                                   fleet_client_id=settings.mqtt_client_id))
            elif settings.broker_accounts == "nats":
                if settings.nats_auth_file is None or not target.username or target.password is None:
                    raise AccountsError("FLEET_BROKER_ACCOUNTS=nats needs FLEET_NATS_AUTH_FILE and the fleet's "
                                        "user and password in FLEET_MQTT_URL")
                accounts = await stack.enter_async_context(
                    NatsAccounts(auth_file=settings.nats_auth_file, pid_files=settings.nats_pid_files,
                                 fleet_user=target.username, fleet_password=target.password.get_secret_value(),
                                 fleet_client_id=settings.mqtt_client_id))
            else:
                accounts = UncheckedAccounts()
        link = MqttLink(target, client_id=settings.mqtt_client_id, queue_max=settings.ingest_queue_max,
                        shared_group=settings.mqtt_shared_group, ca_file=ca_file, probe_s=settings.mqtt_probe_s,
                        protocol=protocol, session_expiry_s=settings.mqtt_session_expiry_s,
                        receive_max=settings.mqtt_receive_max, other_hosts=settings.mqtt_addresses(target)[1:])
        await stack.enter_async_context(link)
        stats = IngestStats()
        relay = RelayWorker(settings)  # the ingest queues deliveries by its route table (docs/relay.md)
        await relay.routes.reload()
        ingest_loop = Ingest(link, stats, batch_max=settings.ingest_batch_max,
                             batch_wait_ms=settings.ingest_batch_wait_ms,
                             rejected_keep=settings.rejected_keep, relay=relay)
        stop = asyncio.Event()
        supervisor = Supervisor(ingest_loop, stop)
        supervising = asyncio.create_task(supervisor.run(), name="fleet-ingest-supervisor")
        sweep = SilenceSweep(lambda: hearing_of(link.state().listening_for_s), timing_of(settings),
                             settings.presence_sweep_s)
        sweeping = asyncio.create_task(sweep.run(), name="fleet-presence-sweep")
        # jobs one instance runs at a time hold a lease (fleet/lease.py, docs/fleet.md "Several instances")
        leases = Leases(settings.instance_id, settings.lease_s)
        engine = RolloutEngine(link, settings, leases=leases)
        rolling = asyncio.create_task(engine.run(), name="fleet-rollouts")
        worker = BroadcastWorker(link, settings)
        register_emergencies(worker)  # clip fetches and emergencies (fleet/broadcast/clips.py, emergency.py)
        worker.parts.append(("delivery", Delivery(link, settings).tick))
        worker.parts.append(("receipts", ReceiptSweep().tick))
        worker.parts.append(("clocks", ClockKeeper(link, settings).tick))
        worker.parts = [(name, tick if name == "delivery" else leases.guard(f"broadcast.{name}", tick))
                        for name, tick in worker.parts]  # delivery claims its speakers; the rest: a lease
        broadcasting = asyncio.create_task(worker.run(), name="fleet-broadcasts")
        await ensure_builtin_rules()  # the default alert rules, by name, before the API answers
        ops = ops_service.build(link, settings, stats, leases)
        watching = asyncio.create_task(ops.run(), name="fleet-ops")
        relaying = asyncio.create_task(relay.run(), name="fleet-relay")
        metrics = ops_metrics.build(link, settings, stats)  # one registry: add figures here (docs/ops.md)
        metrics.sources.append(("rollouts", ops_metrics.rollout_source(engine)))
        metrics.registry.register(relay.stats.latency)
        metrics.registry.register(RelayCollector(relay.stats))
        metrics.sources.append(("relay", relay_families))
        feed = FeedHub(settings)  # its poller runs while a client of the live feed is connected
        try:
            device_broker = MqttTarget(settings.device_broker_url) if settings.device_broker_url else public
            yield Runtime(settings=settings, link=link, stats=stats, broker_url=repr(public),
                          broker_host=target.host, broker_port=target.port, accounts=accounts,
                          device_broker=device_broker, supervisor=supervisor, rollouts=engine,
                          broadcasts=worker, ops=ops, metrics=metrics, relay=relay, feed=feed)
        finally:
            await feed.close()
            await stop_tasks((relaying, watching, broadcasting, rolling, sweeping))
            await relay.close()
            with contextlib.suppress(Exception):  # the database already gone: they run out instead
                await leases.release()
            # stop feeding, drain (what is stored is acknowledged), then close the link
            link.stop_receiving()
            stop.set()
            await supervising
            await link.close()


Services = Callable[[Settings], AbstractAsyncContextManager[Runtime]]


def create_app(settings: Settings | None = None, services: Services = fleet_services) -> FastAPI:
    """The HTTP app; `services` starts what it needs (the demo passes services it already runs)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services(settings) as runtime:
            app.state.runtime = runtime
            async with releases.running(app):
                yield

    # /docs and /openapi.json are served by fleet.web.docs, behind a login
    app = FastAPI(title="IOC fleet", version=__version__, lifespan=lifespan,
                  description="Device registry, presence, health and telemetry of the city's field devices. "
                              f"Request bodies: at most {settings.http_body_max} bytes (else 413) of strict "
                              "JSON (no NaN or Infinity, no lone surrogate or NUL in strings, at most 16 levels "
                              "deep; else 422). Errors never repeat the request back.",
                  docs_url=None, redoc_url=None, openapi_url=None, responses=errors.COMMON_RESPONSES)
    errors.install(app)
    # the last added runs first: headers on every answer, then the pages' origin check, then the
    # body's bounds (the API's cookie requests are checked where the cookie is read: fleet.api.deps)
    app.add_middleware(RequestGuard, body_max=settings.http_body_max,
                       large_bodies={releases.RELEASES_PATH: settings.ota_release_max,
                                     cap.CAP_PATH: cap.CAP_MAX,
                                     audio.AUDIO_PATH: settings.audio_upload_max,
                                     audio_pages.UPLOAD_PATH: settings.audio_upload_max},
                       large_patterns=[(snapshots.UPLOAD_PATH, settings.snapshot_max_bytes)])
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(SecurityHeaders)
    for module in (auth, users, devices, data, control, enrollment, ingest, releases, rollouts, audio, broadcasts,
                   emergency):
        app.include_router(module.router)
    app.include_router(audio.files)
    app.include_router(broadcasts.quiet_router)
    app.include_router(ward_volumes.router)
    app.include_router(cap.router)
    app.include_router(ops_alerts.router)
    app.include_router(ops_channels.router)
    app.include_router(relay.router)
    app.include_router(device_history.router)
    app.include_router(device_series.router)
    app.include_router(device_check.router)
    app.include_router(children_routes.router)
    app.include_router(asset_routes.router)
    app.include_router(asset_pages.router)
    app.include_router(gis.router)
    app.include_router(receipt_routes.router)
    app.include_router(receipt_routes.speakers)
    app.include_router(report_routes.router)
    app.include_router(snapshots.router)
    app.include_router(enrollment.protected)
    app.include_router(releases.files)
    app.include_router(pages.router)
    app.include_router(check_pages.router)
    app.include_router(ops_pages.router)
    app.include_router(rollout_pages.router)
    app.include_router(broadcast_pages.router)
    app.include_router(emergency_pages.router)
    app.include_router(audio_pages.router)
    app.include_router(map_pages.router)
    app.include_router(alert_pages.router)
    app.include_router(rule_pages.router)
    app.include_router(relay_pages.router)
    app.include_router(report_pages.router)
    app.include_router(docs.router)
    app.include_router(metrics_route.router)
    app.include_router(relay_feed.router)
    app.include_router(live_pages.router)
    app.mount("/static/swagger-ui", StaticFiles(directory=docs.swagger_ui_dir()), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=Path(pages.__file__).parent / "static"), name="static")

    @app.get("/healthz", tags=["service"], responses={503: {"description": "not receiving or not storing: "
                                                                           "`problems` says why"}})
    async def healthz() -> JSONResponse:
        """The ingest's real state (docs/fleet.md, "Health"): 200 when it receives and stores, else 503."""
        runtime: Runtime = app.state.runtime
        report = ingest_health(runtime.link, runtime.supervisor, runtime.stats)
        return JSONResponse(jsonable_encoder(report), status_code=200 if report["ok"] else 503)

    return app
