"""The Celery application shared by every context.

Production runs workers on a Redis broker. The embedded default (``FLEX_BROKER_URL=in-process``)
executes tasks eagerly in the calling process, so both modes run the same task code.
Tasks are late-acked and rejected back to the queue when a worker dies, so a crash means
redelivery; each task must therefore be idempotent.
"""

from __future__ import annotations

from celery import Celery

from market.core.config import Settings, get_settings
from market.core.contexts import load_contexts


def configure(app: Celery, settings: Settings) -> Celery:
    jobs = settings.jobs
    app.conf.update(
        broker_url="memory://" if jobs.in_process else jobs.broker_url,
        result_backend=jobs.result_backend,
        task_always_eager=jobs.in_process,
        task_eager_propagates=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        include=[module for ctx in load_contexts() for module in ctx.task_modules],
    )
    return app


celery_app = configure(Celery("flexmarket"), get_settings())
