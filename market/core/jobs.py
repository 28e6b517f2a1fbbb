"""The Celery application shared by every context.

Production runs workers on a Redis broker. The embedded default (``FLEX_BROKER_URL=in-process``)
executes tasks eagerly in the calling process, so both modes run the same task code.
Tasks are late-acked and rejected back to the queue when a worker dies, so a crash means
redelivery; each task must therefore be idempotent.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from market.core.config import Settings, get_settings
from market.core.contexts import load_contexts
from market.core.db import make_engine, make_session_factory


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings from ours. Contexts are read here, lazily, since their modules import this one."""
    jobs = settings.jobs
    contexts = load_contexts()
    return {
        "broker_url": "memory://" if jobs.in_process else jobs.broker_url,
        "result_backend": jobs.result_backend,
        "task_always_eager": jobs.in_process,
        "task_eager_propagates": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "broker_connection_retry_on_startup": True,
        "include": [module for ctx in contexts for module in ctx.task_modules],
        "beat_schedule": {name: entry for ctx in contexts for name, entry in ctx.beat_schedule.items()},
    }


def configure(app: Celery, settings: Settings) -> Celery:
    """Point ``app`` at the broker and database ``settings`` name (tests and the CLI use this)."""
    app.conf.update(celery_config(settings))
    return app


@lru_cache(maxsize=1)
def task_session_factory() -> sessionmaker[Session]:
    """Sessions for tasks in this process, on the database the settings name (one engine per process)."""
    settings = get_settings()
    return make_session_factory(make_engine(settings.database.url, pool_size=settings.database.pool_size))


# Configured lazily, on first use: the configuration reads the contexts, whose task modules import
# this module, so configuring at import time would be circular.
celery_app = Celery("flexmarket")
celery_app.add_defaults(lambda: celery_config(get_settings()))
