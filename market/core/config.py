"""Typed settings, one object per concern, read from ``FLEX_*`` environment variables.

The defaults run embedded: a SQLite file in the working directory and tasks executed in-process,
so ``flexmarket demo`` needs no services. Production sets ``FLEX_ENVIRONMENT=production`` and
real URLs; start-up then refuses placeholder secrets and the embedded defaults.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IN_PROCESS_BROKER = "in-process"
"""Broker URL value that makes Celery run every task eagerly in the calling process."""

PLACEHOLDER_SECRET = "change-me"  # noqa: S105 - the placeholder production refuses
MIN_PEPPER_LENGTH = 32


class DatabaseSettings(BaseSettings):
    """Where the relational store lives."""

    model_config = SettingsConfigDict(env_prefix="FLEX_DATABASE_", extra="ignore")

    url: str = Field(default_factory=lambda: f"sqlite:///{Path.cwd() / 'flexmarket.db'}")
    echo: bool = False
    pool_size: int = 10


class JobSettings(BaseSettings):
    """Celery: the broker, and whether tasks run in-process (the embedded default)."""

    model_config = SettingsConfigDict(env_prefix="FLEX_", extra="ignore")

    broker_url: str = IN_PROCESS_BROKER
    result_backend: str | None = None

    @property
    def in_process(self) -> bool:
        return self.broker_url == IN_PROCESS_BROKER


class ApiSettings(BaseSettings):
    """The HTTP edge: limits that keep one client from exhausting the service."""

    model_config = SettingsConfigDict(env_prefix="FLEX_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    max_list_items: int = 10_000
    default_page_size: int = 100
    max_page_size: int = 1_000
    rate_limit_per_minute: int = Field(default=3_000, ge=0)
    """Requests per participant per 60 s window (0 turns limiting off); see market.core.ratelimit."""
    rate_limit_redis_url: str | None = None
    """Where the counters live. Unset: the broker's Redis when the broker is Redis, else this
    process's memory (embedded mode only)."""
    rate_limit_key_prefix: str = "flexmarket:ratelimit"


class SecuritySettings(BaseSettings):
    """Secrets. ``pepper`` is mixed into every API-key hash so a stolen table alone is useless."""

    model_config = SettingsConfigDict(env_prefix="FLEX_", extra="ignore")

    environment: Literal["embedded", "production"] = "embedded"
    api_key_pepper: str = PLACEHOLDER_SECRET

    @model_validator(mode="after")
    def _no_placeholder_in_production(self) -> SecuritySettings:
        weak = self.api_key_pepper == PLACEHOLDER_SECRET or len(self.api_key_pepper) < MIN_PEPPER_LENGTH
        if self.environment == "production" and weak:
            raise ValueError(
                f"FLEX_API_KEY_PEPPER must be a real secret of at least {MIN_PEPPER_LENGTH} characters "
                "when FLEX_ENVIRONMENT=production"
            )
        return self


class Settings(BaseModel):
    """All settings of one process. Each part reads its own ``FLEX_*`` variables; this composite
    reads none itself, so no unprefixed variable (``DATABASE``, ``API``...) can leak in."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @property
    def rate_limit_redis_url(self) -> str | None:
        """The Redis of the rate limiter: its own setting, else the broker's when that is Redis."""
        if self.api.rate_limit_redis_url:
            return self.api.rate_limit_redis_url
        if self.jobs.broker_url.startswith(("redis://", "rediss://")):
            return self.jobs.broker_url
        return None

    @model_validator(mode="after")
    def _production_needs_services(self) -> Settings:
        if self.security.environment == "production":
            if self.database.url.startswith("sqlite"):
                raise ValueError("FLEX_DATABASE_URL must point at PostgreSQL when FLEX_ENVIRONMENT=production")
            if self.jobs.in_process:
                raise ValueError("FLEX_BROKER_URL must point at Redis when FLEX_ENVIRONMENT=production")
            if self.api.rate_limit_per_minute and self.rate_limit_redis_url is None:
                # In-memory counters per process would multiply the limit by the number of workers.
                raise ValueError(
                    "FLEX_API_RATE_LIMIT_REDIS_URL must point at Redis when FLEX_ENVIRONMENT=production "
                    "(or the broker must be Redis)"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
