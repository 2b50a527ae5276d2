"""The fleet's configuration: one typed class, read from FLEET_* environment variables."""

import os
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.release import TrustList, TrustListError


class MqttTarget:
    """A parsed mqtt:// URL; the password is kept out of repr and logs."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port, got scheme {parts.scheme!r}")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.tls = parts.scheme == "mqtts"
        self.username = parts.username
        self.password = SecretStr(parts.password) if parts.password else None

    def __repr__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"mqtt{'s' if self.tls else ''}://{user}{self.host}:{self.port}"


def parse_hosts(value: str, default_port: int) -> list[tuple[str, int]]:
    """"host" or "host:port" items separated by commas, as (host, port); ValueError says which is wrong."""
    found = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, colon, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host) or (
                colon and not (port.isdigit() and 1 <= int(port) <= 65_535)):
            raise ValueError(f"FLEET_MQTT_OTHER_HOSTS: {item[:80]!r} is not host or host:port")
        found.append((host, int(port) if colon else default_port))
    return found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    # sqlite://PATH (default, WAL) or postgres://user@host:5432/db
    database_url: str = "sqlite://var/fleet.sqlite3"
    # Unset: start the embedded broker (zero-setup demo). Set: use that broker (Mosquitto).
    mqtt_url: str | None = None
    mqtt_client_id: str = "fleet-ingest"  # unique per fleet instance (each has its own session)
    # the other nodes of a clustered broker, "host" or "host:port" separated by commas (the port
    # defaults to FLEET_MQTT_URL's; its scheme, user and CA hold for all): after a failed or lost
    # connection the link's next attempt goes to the next address (docs/brokers.md)
    mqtt_other_hosts: str = ""
    # Several fleet instances on one broker: each subscribes as `$share/<group>/…`, so the broker
    # hands each device message to one of them (docs/fleet.md, "Several instances"). Unset: one instance.
    mqtt_shared_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # this instance's name in the leases of the jobs one instance runs at a time (default host-pid),
    # and how long a lease outlives its holder's last turn (docs/fleet.md, "Several instances")
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1,
                             max_length=128)
    lease_s: float = Field(default=15.0, ge=2, le=600)
    # MQTT version of the fleet's own connection: 5 (Mosquitto) or 3.1.1 (brokers without MQTT 5:
    # RabbitMQ 3.10's and NATS 2.9's MQTT gateways)
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    # MQTT 5: how long the broker keeps the fleet's session (and the messages it holds for it)
    # while the fleet is away, and how many unacknowledged messages it may send the fleet at once
    # (docs/fleet.md, "Acknowledgement after commit")
    mqtt_session_expiry_s: int = Field(default=7 * 86_400, ge=60, le=0xFFFFFFFF)
    mqtt_receive_max: int = Field(default=10_000, ge=1, le=65_535)
    # CA that signed the broker's certificate, for mqtts:// URLs
    mqtt_ca_file: Path | None = None
    # How the broker's per-device accounts are kept: `dynsec` (Mosquitto's dynamic-security
    # plugin; FLEET_MQTT_URL must then carry the fleet's admin user and password) or `none` (an
    # open broker with no accounts: tests of other things only). The embedded broker always
    # checks accounts itself.
    # `nats`: a NATS cluster's MQTT gateway, its accounts in an include file the fleet rewrites
    # (FLEET_NATS_AUTH_FILE) and reloads by signalling each node (FLEET_NATS_PID_FILES, a JSON
    # list); docs/brokers.md.
    broker_accounts: Literal["dynsec", "nats", "none"] = "dynsec"
    nats_auth_file: Path | None = None
    nats_pid_files: list[Path] = []
    # what devices are told to connect to (default: the fleet's own broker address)
    device_broker_url: str | None = None
    embedded_broker_host: str = "127.0.0.1"
    embedded_broker_port: int = Field(default=1884, ge=1, le=65535)
    # embedded broker bounds: see docs/identity.md "The embedded broker under load"
    embedded_broker_max_connections: int = Field(default=1000, ge=10)
    embedded_broker_connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    embedded_broker_connects_per_s: float = Field(default=5.0, gt=0)  # per remote address
    embedded_broker_connect_burst: int = Field(default=30, ge=1)  # per remote address
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # HTTP bounds and browser security: see docs/fleet.md "HTTP limits" and "Browser security"
    http_body_max: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    # mark the session cookie Secure even when the request arrived over plain HTTP (a TLS proxy
    # in front of the fleet); over HTTPS it is always Secure
    cookie_secure: bool = False
    # the fleet's probe through its own subscription, every this many seconds (docs/fleet.md "Health")
    mqtt_probe_s: float = Field(default=5.0, gt=0, le=300)
    # ingest bounds: see docs/fleet.md "Ingest"
    ingest_queue_max: int = Field(default=20_000, ge=100)
    ingest_batch_max: int = Field(default=2_000, ge=1)
    ingest_batch_wait_ms: int = Field(default=50, ge=1)
    rejected_keep: int = Field(default=1000, ge=10)
    # liveness (docs/fleet.md "Liveness"): a device the fleet has not heard from for this many of its
    # health periods is 'stale', and after silent_after_periods it is offline ('silent'); the
    # sweep that writes the silent verdict runs every presence_sweep_s
    stale_after_periods: int = Field(default=2, ge=1, le=100)
    silent_after_periods: int = Field(default=3, ge=2, le=100)
    presence_sweep_s: float = Field(default=5.0, gt=0, le=300)
    # OTA releases (docs/fleet.md "Releases"): files kept by SHA-256 under ota_dir; the release
    # signers' public keys (PEM public keys or an ota_keys.json trust list; unset: every publish
    # is refused); the largest release upload; how long a device's download token lives; the
    # secret the tokens are made with (unset: a random one kept in ota_dir/token.key, 0600)
    ota_dir: Path = Path("var/ota")
    ota_keys: Path | None = None
    ota_release_max: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    ota_token_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)
    ota_token_secret: SecretStr | None = None
    # bsdiff4 holds about 18 times the artifact in memory while it makes a delta (1.45 GB for an
    # 82 MB Pi artifact): no deltas for a Pi file larger than this (devices download it whole)
    ota_delta_file_max: int = Field(default=128 * 1024 * 1024, ge=0)
    # the fleet's address as devices reach it over HTTP, for download URLs in offers
    # (unset: http://FLEET_HTTP_HOST:FLEET_HTTP_PORT)
    public_url: str | None = None
    # ops monitoring (docs/ops.md): how often the alert rules, notifications and retention run
    ops_tick_s: float = Field(default=5.0, gt=0, le=300)
    # the relay worker (docs/relay.md, "Retries, order, and the bounds"): sends in flight per
    # instance in all; pending deliveries per endpoint (beyond: the oldest dead-lettered, "outbox
    # full"); the longest wait between turns; how often the route table is read again (changes made
    # by another instance)
    relay_concurrency: int = Field(default=64, ge=1, le=1000)
    relay_outbox_max: int = Field(default=100_000, ge=1, le=10_000_000)
    relay_tick_s: float = Field(default=1.0, gt=0, le=60)
    relay_routes_reload_s: float = Field(default=5.0, gt=0, le=600)
    # the live feed (docs/relay.md, "Live feed"): one poller per process reads new event rows
    # every feed_poll_s; at most feed_max_clients streams (503 beyond), each with a queue of
    # feed_queue_max events (full: `overflow` and closed); a resume replays at most feed_replay_max
    feed_poll_s: float = Field(default=0.5, ge=0.05, le=30)
    feed_max_clients: int = Field(default=100, ge=1, le=10_000)
    feed_queue_max: int = Field(default=1000, ge=1, le=100_000)
    feed_replay_max: int = Field(default=500, ge=1, le=10_000)
    # PostgreSQL: how long the feed waits for a missing event id to commit before skipping it
    feed_hole_wait_s: float = Field(default=3.0, ge=0, le=60)
    # retention (docs/ops.md, "Retention"): raw health and telemetry kept retention_raw_days, then
    # as hourly aggregates until retention_hourly_days; device events, presence changes and resolved
    # alerts (with their history) their own days; the work runs every retention_every_s (sooner
    # while a backlog lasts)
    retention_raw_days: int = Field(default=14, ge=1, le=3650)
    retention_hourly_days: int = Field(default=400, ge=1, le=36500)
    retention_events_days: int = Field(default=90, ge=1, le=36500)
    retention_presence_days: int = Field(default=90, ge=1, le=36500)
    retention_alerts_days: int = Field(default=365, ge=1, le=36500)
    retention_every_s: float = Field(default=600.0, ge=10, le=86400)
    # GET /metrics (docs/ops.md, "Metrics"): set, Prometheus must send it as a bearer token; unset,
    # only clients on the fleet's own machine (127.0.0.0/8, ::1) are answered
    metrics_token: SecretStr | None = None
    # e-mail notifications (docs/ops.md, "Notifications"): the SMTP server alerts are sent through
    # (unset: e-mail channels fail with that reason); the password is never logged nor stored
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str = Field(default="ioc-fleet@localhost", max_length=200, pattern=r"^[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]+$")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    # the map's ward outlines (docs/ops.md, "The map"): a GeoJSON file of Polygon/MultiPolygon
    # features with properties.ward; checked at start (a bad file stops the start), read again when it changes
    ward_outlines: Path | None = None
    # the audio library and the broadcasts calendar (docs/broadcasts.md): clips by SHA-256 under
    # audio_dir within audio_budget_mb; upload and duration bounds; the loudness target (EBU R128);
    # ffmpeg's time per run; the speakers' download tokens; the city's time zone for schedules
    audio_dir: Path = Path("var/audio")
    audio_budget_mb: int = Field(default=2048, ge=1)
    audio_upload_max: int = Field(default=50 * 1024 * 1024, ge=1024 * 1024)
    audio_max_s: float = Field(default=600.0, ge=1, le=3600)
    audio_target_lufs: float = Field(default=-23.0, ge=-36, le=-10)
    audio_ffmpeg_timeout_s: float = Field(default=120.0, gt=0, le=1800)
    audio_token_ttl_s: int = Field(default=8 * 86400, ge=60, le=30 * 86400)
    audio_token_secret: SecretStr | None = None
    timezone: str = "Asia/Ho_Chi_Minh"
    broadcast_conflict_days: int = Field(default=62, ge=1, le=366)
    # a speaker whose clock offset estimate is above this either way is flagged and sent set_time
    # (docs/broadcasts.md, "Clock offsets")
    clock_offset_max_ms: int = Field(default=500, ge=10, le=3_600_000)
    # how far ahead a speaker's desired-state schedule reaches (docs/broadcasts.md, "Delivery")
    broadcast_horizon_days: int = Field(default=7, ge=1, le=31)
    # relay snapshots (docs/relay.md, "Snapshots"): images by SHA-256 under snapshot_dir; the
    # largest upload; each device's share of the store (507 at it) and the whole store's bound
    # (the oldest images deleted first); the days an image is kept; how long a signed snapshot URL
    # lives; the secret the URLs are signed with (unset: a random one in snapshot_dir/token.key, 0600)
    snapshot_dir: Path = Path("var/snapshots")
    snapshot_max_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    snapshot_device_max_mb: int = Field(default=512, ge=1)
    snapshot_store_max_mb: int = Field(default=10_240, ge=1)
    retention_snapshots_days: int = Field(default=30, ge=1, le=36500)
    snapshot_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)
    snapshot_token_secret: SecretStr | None = None

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"FLEET_TIMEZONE: no time zone named {value[:64]!r}") from err
        return value

    @field_validator("mqtt_url", "device_broker_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value:
            MqttTarget(value)
        return value or None

    @field_validator("mqtt_other_hosts")
    @classmethod
    def _check_other_hosts(cls, value: str) -> str:
        parse_hosts(value, 1883)
        return value

    def mqtt_addresses(self, target: MqttTarget) -> list[tuple[str, int]]:
        """FLEET_MQTT_URL's host and port, then FLEET_MQTT_OTHER_HOSTS's, in the order to try them."""
        return [(target.host, target.port), *parse_hosts(self.mqtt_other_hosts, target.port)]

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgres://", "postgresql://", "asyncpg://")):
            raise ValueError("FLEET_DATABASE_URL must be sqlite://PATH or postgres://…")
        return value

    @model_validator(mode="after")
    def _check_retention(self) -> "Settings":
        if self.retention_hourly_days < self.retention_raw_days:
            raise ValueError("FLEET_RETENTION_HOURLY_DAYS must not be below FLEET_RETENTION_RAW_DAYS")
        return self

    @model_validator(mode="after")
    def _check_liveness(self) -> "Settings":
        if self.stale_after_periods >= self.silent_after_periods:
            raise ValueError("FLEET_STALE_AFTER_PERIODS must be below FLEET_SILENT_AFTER_PERIODS")
        return self

    @model_validator(mode="after")
    def _check_smtp(self) -> "Settings":
        if self.smtp_password is not None and not self.smtp_user:
            raise ValueError("FLEET_SMTP_PASSWORD is set without FLEET_SMTP_USER")
        if self.smtp_password is not None and not self.smtp_starttls and self.smtp_host not in (
                "localhost", "127.0.0.1", "::1"):
            raise ValueError("FLEET_SMTP_PASSWORD would cross the network in clear: set FLEET_SMTP_STARTTLS=true")
        return self

    @field_validator("ota_keys")
    @classmethod
    def _check_ota_keys(cls, value: Path | None) -> Path | None:
        """The keys are read again at every publish (a key added needs no restart); a file that
        cannot be read stops the start here instead of every publish later."""
        if value is not None:
            try:
                TrustList.load(value)
            except (OSError, TrustListError) as err:
                raise ValueError(f"FLEET_OTA_KEYS {value}: {getattr(err, 'strerror', None) or err}") from None
        return value

    @field_validator("ward_outlines")
    @classmethod
    def _check_ward_outlines(cls, value: Path | None) -> Path | None:
        if value is not None:
            from fleet.gis import OutlineError, load_outlines  # the map's module: loaded only when set

            try:
                load_outlines(value)
            except OutlineError as err:
                raise ValueError(f"FLEET_WARD_OUTLINES {value}: {err}") from None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("FLEET_METRICS_TOKEN must be at least 16 characters (e.g. openssl rand -hex 24)")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError("FLEET_PUBLIC_URL must be http(s)://host[:port][/path]")
            return value.rstrip("/")
        return None

    def public_base_url(self) -> str:
        """Where devices reach the fleet over HTTP (FLEET_PUBLIC_URL, else the address it listens on)."""
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    def mqtt_target(self) -> MqttTarget | None:
        return MqttTarget(self.mqtt_url) if self.mqtt_url else None

    def sqlite_path(self) -> Path | None:
        if self.database_url.startswith("sqlite://"):  # sqlite://PATH[?options]
            return Path(self.database_url.removeprefix("sqlite://").split("?", 1)[0])
        return None
