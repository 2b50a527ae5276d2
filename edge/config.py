"""The agent's configuration: a TOML file validated into typed settings at start-up.

Every field may also come from the environment as `EDGE_<FIELD>` (nested with `__`, e.g.
`EDGE_BROKER__PASSWORD`), and the environment wins over the file, so a secret can live in a
systemd credential or an environment file instead of the config file.
"""

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contract import DEVICE_ID_PATTERN, is_valid_device_id
from edge.errors import ConfigError
from edge.queue import RAM_MAX_BYTES


class BrokerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "mqtt://127.0.0.1:1883"  # mqtts://host:8883 for TLS
    # The other nodes of a clustered broker (docs/brokers.md): after a failed or lost connection
    # the next attempt goes to the next address, url first, in turn. Same scheme as url; the same
    # credentials and ca_file.
    other_urls: tuple[str, ...] = ()
    ca_file: Path | None = None  # the CA of the broker's certificate (default: the system's CAs)
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # How long one connection attempt may take (TCP connect, CONNACK, one PUBACK).
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Reconnect delays: exponential from backoff_min_s, capped at backoff_max_s, with jitter.
    backoff_min_s: float = Field(default=0.5, gt=0, le=60)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return _check_broker_url(url)

    @field_validator("other_urls")
    @classmethod
    def _check_other_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_broker_url(url) for url in urls)

    @model_validator(mode="after")
    def _check_schemes(self) -> "BrokerSettings":
        if any(urlsplit(url).scheme != urlsplit(self.url).scheme for url in self.other_urls):
            raise ValueError("other_urls must use the same scheme as url (all mqtts:// or all mqtt://)")
        return self

    @property
    def urls(self) -> tuple[str, ...]:
        """Every broker address, in the order they are tried."""
        return (self.url, *self.other_urls)

    @model_validator(mode="after")
    def _check_backoff(self) -> "BrokerSettings":
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not be larger than backoff_max_s")
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> "BrokerSettings":
        # A CA file with a plaintext URL means someone believes the link is verified when it is not.
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is set but the url is mqtt:// (plaintext: nothing is verified); use mqtts://")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


def _check_broker_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("must look like mqtt://host:port or mqtts://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; use broker.username and broker.password")
    if not parts.hostname:
        raise ValueError("has no host; it must look like mqtt://host:port")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError as err:
        raise ValueError(f"has a bad port: {err}") from err
    if parts.path not in ("", "/"):
        raise ValueError("must not have a path; it must look like mqtt://host:port")
    return url


class FleetSettings(BaseModel):
    """The fleet's HTTP(S) address as the device reaches it (snapshot uploads, docs/relay.md). The
    device logs in as itself: user = device_id, password = broker.password."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str  # http(s)://host[:port][/path]
    ca_file: Path | None = None  # the CA of the fleet's certificate (default: the system's CAs)
    # How long one request may take (connect, send, answer).
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    # Retry delays after a failed upload: exponential from backoff_min_s, capped at backoff_max_s, jittered.
    backoff_min_s: float = Field(default=1.0, gt=0, le=60)
    backoff_max_s: float = Field(default=300.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must look like https://host[:port][/path] or http://host[:port][/path]")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials; the device logs in with its id and broker.password")
        if not parts.hostname:
            raise ValueError("has no host; it must look like https://host[:port][/path]")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when it is read
        except ValueError as err:
            raise ValueError(f"has a bad port: {err}") from err
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment; it must look like https://host[:port][/path]")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _check_backoff(self) -> "FleetSettings":
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not be larger than backoff_max_s")
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> "FleetSettings":
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is set but the url is http:// (plaintext: nothing is verified); use https://")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "https"


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The store-and-forward queue holds at most this many messages; when it is full the oldest
    # are dropped and counted (health `dropped`). Each message is at most 8 KiB (the contract).
    max_messages: int = Field(default=100_000, ge=10, le=10_000_000)
    # Messages sent to the broker and not yet acknowledged (PUBACK) at any time.
    inflight: int = Field(default=32, ge=1, le=1000)
    # While the state folder's disk is full, new messages wait in memory up to this many bytes;
    # at the bound the oldest not yet sent are dropped and counted (docs/edge.md, "A full disk").
    ram_max_bytes: int = Field(default=RAM_MAX_BYTES, ge=16_384, le=1 << 30)


class OtaSettings(BaseModel):
    """Over-the-air updates of the agent itself (docs/edge.md, "Updates")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The install root: versions/, current, launch (install.sh's layout).
    root: Path = Path("/opt/ioc-edge")
    # The trust list install.sh placed; a committed key rotation keeps its own in the state folder.
    keys_file: Path = Path("/etc/ioc-edge/ota_keys.json")
    # The class releases name (docs/ota.md); default: from this machine (pi-arm64, pi-armv7, pi-x86_64).
    device_class: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$")  # contract/release.py's _CLASS
    # A new version on trial that has not passed its health gate within this many seconds is rolled back.
    trial_s: int = Field(default=300, ge=10, le=86_400)


class AgentConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    device_id: str
    state_dir: Path
    health_period_s: int = Field(default=30, ge=1, le=86_400)
    # Free text for the birth certificate; read from the device tree when not set.
    hw: str | None = None
    # On a clean stop, how long to keep sending queued messages before disconnecting.
    shutdown_drain_s: float = Field(default=2.0, ge=0, le=60)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    ota: OtaSettings = Field(default_factory=OtaSettings)
    # The fleet's HTTP(S) side; without it the camera role keeps its snapshots on the Pi.
    fleet: FleetSettings | None = None
    # Role name -> its own settings table, checked by the role (see edge.roles).
    roles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("device_id")
    @classmethod
    def _check_device_id(cls, value: str) -> str:
        if not is_valid_device_id(value):
            raise ValueError(f"must match {DEVICE_ID_PATTERN} (lower-case letters, digits and '-')")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return env_settings, init_settings


def describe_validation_error(err: ValidationError) -> str:
    """One line naming the first bad field; never the offending value (it may be a secret)."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    message = re.sub(r"^Value error, ", "", first["msg"])
    more = err.error_count() - 1
    return f"{where}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> AgentConfig:
    """Validate a config mapping; a relative state_dir is taken relative to `base_dir`."""
    try:
        config = AgentConfig(**data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err)) from err
    if base_dir is not None and not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": base_dir / config.state_dir})
    ca_file = config.broker.ca_file
    if base_dir is not None and ca_file is not None and not ca_file.is_absolute():
        config = config.model_copy(update={"broker": config.broker.model_copy(update={"ca_file": base_dir / ca_file})})
    fleet = config.fleet
    if base_dir is not None and fleet is not None and fleet.ca_file is not None and not fleet.ca_file.is_absolute():
        config = config.model_copy(update={"fleet": fleet.model_copy(update={"ca_file": base_dir / fleet.ca_file})})
    if base_dir is not None:
        ota = config.ota
        config = config.model_copy(update={"ota": ota.model_copy(update={
            "root": base_dir / ota.root, "keys_file": base_dir / ota.keys_file})})
    return config


def load_config(path: Path) -> AgentConfig:
    """Read and validate a TOML config file; ConfigError carries one line for the user."""
    try:
        text = path.read_bytes().decode()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    try:
        return parse_config(data, base_dir=path.resolve().parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string without ASCII escaping is a valid TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):  # in a list (a camera of roles.camera.cameras): an inline table
        pairs = (f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to the config file")


def _toml_table(name: str, table: Mapping[str, Any]) -> Iterable[str]:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping) and v is not None}
    if name and (scalars or not table):
        yield f"\n[{name}]"
    for key, value in scalars.items():
        yield f"{key} = {_toml_value(value)}"
    for key, value in table.items():
        if isinstance(value, Mapping):
            yield from _toml_table(f"{name}.{key}" if name else key, value)


def dump_config(config: AgentConfig) -> str:
    """The TOML text of a config (secrets included: it is meant for a file only the agent reads)."""
    data = config.model_dump(mode="json", exclude_none=True)
    if config.broker.password is not None:
        data["broker"]["password"] = config.broker.password.get_secret_value()
    return "\n".join(_toml_table("", data)).lstrip("\n") + "\n"


def write_config(config: AgentConfig, path: Path) -> Path:
    """Write a config file that `edge-agent --config` accepts; readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(dump_config(config))
    return path
