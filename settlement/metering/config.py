"""Settings of meter data ingestion, read from ``FLEX_METERING_*`` environment variables."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest meter file the upload route accepts (the app's general body limit is far lower). About
2.5 million CSV readings or tens of millions in Parquet; larger deliveries are split into files."""


class MeteringSettings(BaseSettings):
    """Plausibility limits and the resend policy for files no worker has processed."""

    model_config = SettingsConfigDict(env_prefix="FLEX_METERING_", extra="ignore")

    max_average_kw: Decimal = Field(default=Decimal(10_000), gt=0)
    """A reading above ``max_average_kw × ISP hours`` kWh (2,500 kWh per 15-minute ISP) is implausible.
    10 MW is about the largest connection on a Dutch medium-voltage distribution grid; larger loads
    connect to the transmission grid and are outside a local flexibility market. A value above it is
    almost surely a unit mistake (Wh or W sent as kWh). Markets with larger sites raise it."""
    resend_after_minutes: int = Field(default=10, ge=1)
    """A file still pending this long after it was last enqueued is enqueued again (the broker lost
    the message, or every delivery crashed)."""
    max_resends: int = Field(default=5, ge=0)
    """After this many resends a file stays pending for an operator to look at (a poison file must
    not crash workers forever)."""
    max_listed_issues: int = Field(default=1_000, ge=1)
    """Issues listed in a report; every kind is still counted in full."""


@lru_cache(maxsize=1)
def metering_settings() -> MeteringSettings:
    return MeteringSettings()
