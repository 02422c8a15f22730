"""Configuration: environment variables first, then an optional TOML file, then defaults.

The standard names of the services are used as they are (OPENAI_API_KEY, OPENAI_BASE_URL,
SLACK_BOT_TOKEN, ...); deepmem's own settings are prefixed DEEPMEM_. The file is
``$DEEPMEM_HOME/config.toml`` or the path in DEEPMEM_CONFIG; its keys are the field names
below (``embedder = "openai"``). Secrets are SecretStr, so they never show in a repr or a log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource)

from .errors import ConfigError

__all__ = ["Settings", "load_settings", "default_home"]


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "deepmem"


def _env(name: str, *more: str) -> AliasChoices:
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True, validate_default=True,
                                      case_sensitive=True)

    home: Path = Field(default_factory=default_home, validation_alias=_env("DEEPMEM_HOME"))

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

    # serving and the nightly job
    host: str = Field("127.0.0.1", validation_alias=_env("DEEPMEM_HOST"))
    port: int = Field(8765, ge=0, le=65535, validation_alias=_env("DEEPMEM_PORT"))
    retrain_cron: str = Field("0 3 * * *", validation_alias=_env("DEEPMEM_RETRAIN_CRON"),
                              description="crontab expression in local time, or 'off'")

    @field_validator("history_channels", mode="before")
    @classmethod
    def _channel_list(cls, value):
        if isinstance(value, str):
            return [c.strip() for c in value.split(",") if c.strip()]
        return value

    @property
    def llm_configured(self) -> bool:
        return self.openai_api_key is not None or bool(self.openai_base_url)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


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
    """Settings from the environment and the config file; errors become one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # e.g. a malformed TOML file
        raise ConfigError(f"cannot read the configuration file: {exc}") from None
