"""Configuration: environment variables first, then an optional TOML file, then defaults.

The standard names of the services are used as they are (OPENAI_API_KEY, OPENAI_BASE_URL,
SLACK_BOT_TOKEN, ...); deepmem's own settings are prefixed DEEPMEM_. The file is
``$DEEPMEM_HOME/config.toml`` or the path in DEEPMEM_CONFIG; its keys are the field names
below (``embedder = "openai"``). Secrets are SecretStr, so they never show in a repr or a log.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource)

from .errors import ConfigError

__all__ = ["Settings", "load_settings", "default_home", "is_loopback"]

SECRET_FIELDS = ("database_url", "openai_api_key", "slack_bot_token", "slack_signing_secret", "slack_app_token", "chat_token")


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "deepmem"


def _env(name: str, *more: str) -> AliasChoices:
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True, validate_default=True,
                                      case_sensitive=True)

    home: Path = Field(default_factory=default_home, validation_alias=_env("DEEPMEM_HOME"))

    # the scale-out backend: store, feedback log, adapter registry and coordination in PostgreSQL
    # (pgvector); unset = the single-machine default (sqlite-vec + DuckDB in DEEPMEM_HOME)
    database_url: SecretStr | None = Field(None, validation_alias=_env("DEEPMEM_DATABASE_URL"))
    # the pgvector HNSW index (scale-out mode): more links and a deeper build raise recall and build time;
    # a larger ef_search raises recall and search time (bench/SCALE.md)
    pg_hnsw_m: int = Field(16, ge=2, le=100, validation_alias=_env("DEEPMEM_PG_HNSW_M"),
                           description="links per vector in the HNSW graph (pgvector's m)")
    pg_hnsw_ef_construction: int = Field(64, ge=4, le=1000, validation_alias=_env("DEEPMEM_PG_HNSW_EF_CONSTRUCTION"),
                                         description="candidates kept while building (at least twice m)")
    pg_ef_search: int = Field(400, ge=1, le=1000, validation_alias=_env("DEEPMEM_PG_EF_SEARCH"),
                              description="candidates kept while searching (hnsw.ef_search)")

    # embeddings
    embedder: Literal["local", "openai"] = Field("local", validation_alias=_env("DEEPMEM_EMBEDDER"))
    local_model: str = Field("", validation_alias=_env("DEEPMEM_LOCAL_MODEL"),
                             description="path of a sentence-transformers model; empty = bundled all-MiniLM-L6-v2")
    local_precision: Literal["auto", "fp32", "bf16"] = Field("auto", validation_alias=_env("DEEPMEM_LOCAL_PRECISION"))
    embedding_model: str = Field("text-embedding-3-small",
                                 validation_alias=_env("DEEPMEM_EMBEDDING_MODEL"))
    embedding_dimensions: int | None = Field(None, validation_alias=_env("DEEPMEM_EMBEDDING_DIMENSIONS"))

    # OpenAI or any compatible endpoint
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))
    chat_model: str = Field("gpt-4o-mini", validation_alias=_env("DEEPMEM_CHAT_MODEL"))
    question_model: str = Field("gpt-4o-mini", validation_alias=_env("DEEPMEM_QUESTION_MODEL"))
    llm_timeout: float = Field(60.0, gt=0, validation_alias=_env("DEEPMEM_LLM_TIMEOUT"))
    llm_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("DEEPMEM_LLM_CONCURRENCY"))

    # chunking
    chunk_tokens: int = Field(180, ge=32, le=8000, validation_alias=_env("DEEPMEM_CHUNK_TOKENS"))

    # crawling
    crawl_concurrency: int = Field(8, ge=1, le=64, validation_alias=_env("DEEPMEM_CRAWL_CONCURRENCY"))
    crawl_timeout: float = Field(20.0, gt=0, validation_alias=_env("DEEPMEM_CRAWL_TIMEOUT"))
    crawl_max_pages: int = Field(5000, ge=1, validation_alias=_env("DEEPMEM_CRAWL_MAX_PAGES"))
    crawl_robots: bool = Field(True, validation_alias=_env("DEEPMEM_CRAWL_ROBOTS"))  # obey robots.txt
    max_page_bytes: int = Field(5_000_000, ge=1024, validation_alias=_env("DEEPMEM_MAX_PAGE_BYTES"))
    archive_max_bytes: int = Field(500_000_000, ge=1024, validation_alias=_env("DEEPMEM_ARCHIVE_MAX_BYTES"),
                                   description="what an archive may expand to, all members together")
    archive_max_members: int = Field(50_000, ge=1, validation_alias=_env("DEEPMEM_ARCHIVE_MAX_MEMBERS"))

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_env("SLACK_API_URL"))
    history_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("DEEPMEM_HISTORY_CHANNELS"),
        description="comma-separated channels whose threads `serve` and `history import` read")
    history_interval: float | None = Field(
        86400.0, validation_alias=_env("DEEPMEM_HISTORY_INTERVAL"),
        description="how often `serve` reads DEEPMEM_HISTORY_CHANNELS (at start, then every 30m, 6h, 1d, ...), "
                    "in seconds after validation; 'off': serve never reads them (`history import` still does)")

    # serving and the nightly job
    host: str = Field("127.0.0.1", validation_alias=_env("DEEPMEM_HOST"))
    port: int = Field(8765, ge=0, le=65535, validation_alias=_env("DEEPMEM_PORT"))
    # the local chat beyond loopback: a shared token and/or a user header set by a trusted reverse proxy
    chat_token: SecretStr | None = Field(None, validation_alias=_env("DEEPMEM_CHAT_TOKEN"))
    chat_user_header: str = Field("", validation_alias=_env("DEEPMEM_CHAT_USER_HEADER"))
    chat_trusted_proxies: str = Field("127.0.0.1,::1", validation_alias=_env("DEEPMEM_CHAT_TRUSTED_PROXIES"),
                                      description="comma-separated addresses or networks of reverse proxies")
    chat_hosts: str = Field("", validation_alias=_env("DEEPMEM_CHAT_HOSTS"),
                            description="comma-separated host names the chat is reached by (beyond loopback)")
    chat_rate: int = Field(60, ge=1, le=100_000, validation_alias=_env("DEEPMEM_CHAT_RATE"),
                           description="chat requests per minute per client")
    retrain_cron: str = Field("0 3 * * *", validation_alias=_env("DEEPMEM_RETRAIN_CRON"),
                              description="crontab expression in local time, or 'off'")

    @field_validator("history_channels", mode="before")
    @classmethod
    def _channel_list(cls, value):
        if isinstance(value, str):
            return [c.strip() for c in value.split(",") if c.strip()]
        return value

    @field_validator("history_interval", mode="before")
    @classmethod
    def _interval(cls, value):
        """'off', seconds, or a number with a unit (s, m, h, d): seconds, at least a minute, or None."""
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            if text in ("off", "none", "never", "no", "false"):
                return None
            match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?", text)
            if not match:
                raise ValueError(f"DEEPMEM_HISTORY_INTERVAL: {value!r} is not a duration such as 30m, 6h or 1d, "
                                 f"or 'off'")
            seconds = float(match.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
                                               None: 1}[match.group(2)]
        if seconds < 60:
            raise ValueError("DEEPMEM_HISTORY_INTERVAL must be at least a minute (or 'off')")
        return seconds

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("DEEPMEM_DATABASE_URL must be a postgresql:// URL (unset it for the single-machine store)")
        return value

    @field_validator(*SECRET_FIELDS, mode="before")
    @classmethod
    def _no_empty_secret(cls, value, info):
        """An empty secret (``SLACK_SIGNING_SECRET=${UNSET}``) must never pass for "not set": it is an error."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None:
            return None
        name = env_name(info.field_name)
        if not isinstance(raw, str):
            raise ValueError(f"{name} must be a string")
        raw = raw.strip()  # a secret read from a file often ends with a newline
        if not raw:
            raise ValueError(f"{name} is set but empty: give it a value or unset it")
        if any(ch.isspace() or not ch.isprintable() for ch in raw):
            raise ValueError(f"{name} contains whitespace or control characters")
        return raw

    @field_validator("slack_api_url")
    @classmethod
    def _slack_over_tls(cls, value: str) -> str:
        """The bot token travels with every call: only https, or http to this machine (tests, a local proxy)."""
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value if value.endswith("/") else value + "/"
        if parts.scheme == "http" and is_loopback(parts.hostname or ""):
            return value if value.endswith("/") else value + "/"
        raise ValueError("SLACK_API_URL must be an https:// URL (or http:// to 127.0.0.1)")  # no value: it may hold a password

    @field_validator("chat_trusted_proxies", "chat_hosts")
    @classmethod
    def _comma_list(cls, value: str, info) -> str:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if info.field_name == "chat_trusted_proxies":
            for item in items:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"DEEPMEM_CHAT_TRUSTED_PROXIES: {item!r} is not an address or network") from None
        return ",".join(items)

    @model_validator(mode="after")
    def _hnsw_build(self):
        if self.pg_hnsw_ef_construction < 2 * self.pg_hnsw_m:
            raise ValueError(f"DEEPMEM_PG_HNSW_EF_CONSTRUCTION ({self.pg_hnsw_ef_construction}) must be at least "
                             f"twice DEEPMEM_PG_HNSW_M ({self.pg_hnsw_m})")
        return self

    @property
    def llm_configured(self) -> bool:
        return self.openai_api_key is not None or bool(self.openai_base_url)

    @property
    def trusted_proxies(self) -> list:
        return [ipaddress.ip_network(v, strict=False) for v in self.chat_trusted_proxies.split(",") if v]

    @property
    def chat_access_control(self) -> bool:
        """Whether the chat checks who is asking (needed to serve it beyond loopback)."""
        return self.chat_token is not None or bool(self.chat_user_header)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def env_name(field: str) -> str:
    """The environment variable that sets a field (SLACK_SIGNING_SECRET for slack_signing_secret)."""
    alias = Settings.model_fields[field].validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else field


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config_path() -> Path | None:
    explicit = os.environ.get("DEEPMEM_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"DEEPMEM_CONFIG points to {path}, which is not a file")
        return path
    home = Path(os.environ.get("DEEPMEM_HOME") or default_home()).expanduser()
    path = home / "config.toml"
    return path if path.is_file() else None


def load_settings(**overrides) -> Settings:
    """Settings from the environment and the config file; errors become one readable, one-line ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            message = err["msg"].removeprefix("Value error, ")
            # a validator's message names the variable itself; pydantic's own ones get the field's name
            problems.append(message if err["type"] == "value_error" else f"{where}: {message}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    except ValueError as exc:  # e.g. a malformed TOML file
        raise ConfigError(f"cannot read the configuration file: {exc}") from None
