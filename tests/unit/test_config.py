"""Settings read from FLEX_* environment variables; production refuses placeholders and embedded defaults."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from market.core.config import IN_PROCESS_BROKER, PLACEHOLDER_SECRET, Settings

PG_URL = "postgresql+psycopg://flex:pw@db.example:5432/flex"
REDIS_URL = "redis://redis.example:6379/0"
# Unprefixed names that Settings (which has no env_prefix) would read for its nested fields.
NESTED_FIELD_NAMES = {"DATABASE", "JOBS", "API", "SECURITY"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Each test starts from an environment without any flexmarket settings, in an empty directory."""
    for name in list(os.environ):
        if name.upper().startswith("FLEX_") or name.upper() in NESTED_FIELD_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def production_env(monkeypatch):
    monkeypatch.setenv("FLEX_ENVIRONMENT", "production")
    monkeypatch.setenv("FLEX_API_KEY_PEPPER", "a-real-secret-pepper-of-32-chars-or-more")
    monkeypatch.setenv("FLEX_DATABASE_URL", PG_URL)
    monkeypatch.setenv("FLEX_BROKER_URL", REDIS_URL)


def test_defaults_are_embedded(clean_env):
    s = Settings()
    assert s.database.url == f"sqlite:///{clean_env / 'flexmarket.db'}"
    assert s.database.url.startswith("sqlite:///")
    assert s.database.echo is False
    assert s.database.pool_size == 10
    assert s.jobs.broker_url == "in-process" == IN_PROCESS_BROKER
    assert s.jobs.result_backend is None
    assert s.jobs.in_process is True
    assert s.security.environment == "embedded"
    assert s.security.api_key_pepper == PLACEHOLDER_SECRET == "change-me"
    assert s.api.host == "127.0.0.1"
    assert s.api.port == 8000


def test_env_vars_are_read(monkeypatch):
    monkeypatch.setenv("FLEX_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("FLEX_DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("FLEX_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("FLEX_API_PORT", "9000")
    monkeypatch.setenv("FLEX_API_KEY_PEPPER", "p")
    s = Settings()
    assert s.database.url == "sqlite:///elsewhere.db"
    assert s.database.pool_size == 3
    assert s.jobs.broker_url == REDIS_URL
    assert s.jobs.in_process is False
    assert s.api.port == 9000
    assert s.security.api_key_pepper == "p"


def test_embedded_allows_placeholder_pepper():
    assert Settings().security.api_key_pepper == PLACEHOLDER_SECRET


def test_production_with_placeholder_pepper_raises(monkeypatch):
    production_env(monkeypatch)
    monkeypatch.delenv("FLEX_API_KEY_PEPPER")
    with pytest.raises(ValidationError, match="FLEX_API_KEY_PEPPER"):
        Settings()


def test_production_with_explicit_placeholder_pepper_raises(monkeypatch):
    production_env(monkeypatch)
    monkeypatch.setenv("FLEX_API_KEY_PEPPER", "change-me")
    with pytest.raises(ValidationError, match="FLEX_API_KEY_PEPPER"):
        Settings()


def test_production_with_sqlite_url_raises(monkeypatch):
    production_env(monkeypatch)
    monkeypatch.setenv("FLEX_DATABASE_URL", "sqlite:///prod.db")
    with pytest.raises(ValidationError, match="FLEX_DATABASE_URL"):
        Settings()


def test_production_with_default_sqlite_url_raises(monkeypatch):
    production_env(monkeypatch)
    monkeypatch.delenv("FLEX_DATABASE_URL")
    with pytest.raises(ValidationError, match="FLEX_DATABASE_URL"):
        Settings()


def test_production_with_in_process_broker_raises(monkeypatch):
    production_env(monkeypatch)
    monkeypatch.delenv("FLEX_BROKER_URL")
    with pytest.raises(ValidationError, match="FLEX_BROKER_URL"):
        Settings()


def test_production_with_real_settings_passes(monkeypatch):
    production_env(monkeypatch)
    s = Settings()
    assert s.security.environment == "production"
    assert s.security.api_key_pepper == "a-real-secret-pepper-of-32-chars-or-more"
    assert s.database.url == PG_URL
    assert s.jobs.broker_url == REDIS_URL
    assert s.jobs.in_process is False


def test_unknown_environment_is_refused(monkeypatch):
    monkeypatch.setenv("FLEX_ENVIRONMENT", "staging")
    with pytest.raises(ValidationError):
        Settings()


def test_unprefixed_api_env_var_is_ignored(monkeypatch):
    monkeypatch.setenv("API", "x")
    assert Settings().api.port == 8000


def test_unprefixed_database_env_var_does_not_override(monkeypatch, clean_env):
    monkeypatch.setenv("DATABASE", '{"url": "postgresql://intruder/db"}')
    assert Settings().database.url == f"sqlite:///{clean_env / 'flexmarket.db'}"
