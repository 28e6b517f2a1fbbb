"""Alembic, driven from code so ``flexmarket migrate`` needs no ini file."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from market.core.db import normalise_database_url


def migrations_dir() -> Path:
    """``FLEX_MIGRATIONS_DIR``, else ``migrations/`` beside the package, else in the working directory."""
    if env := os.environ.get("FLEX_MIGRATIONS_DIR"):
        return Path(env)
    beside_package = Path(__file__).resolve().parents[2] / "migrations"
    return beside_package if beside_package.is_dir() else Path.cwd() / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Alembic's config is a ConfigParser: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", normalise_database_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
