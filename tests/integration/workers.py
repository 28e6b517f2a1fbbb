"""A real Celery worker on Redis for one test: a subprocess consuming a queue of that test only.

The in-test Celery app is pointed at the same broker and queue while the worker runs, and put back
afterwards, so tasks the test (or the app under test) sends reach this worker and no other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from market.core.config import JobSettings, Settings
from market.core.jobs import celery_app, configure

REDIS_URL = os.environ.get("FLEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RunningWorker:
    queue: str
    settings: Settings
    """The test's settings with the Redis broker: build an app from these to have it enqueue."""
    process: subprocess.Popen[str]


@contextmanager
def celery_worker(settings: Settings, name: str = "flex") -> Iterator[RunningWorker]:
    """Start ``celery … worker --pool=solo`` and wait until it answers a ping; stop it and restore
    the Celery app afterwards. (tests/integration/test_clearing.py starts one through our CLI.)"""
    queue = f"{name}-{uuid.uuid4().hex[:8]}"
    redis_settings = settings.model_copy(update={"jobs": JobSettings(broker_url=REDIS_URL)})
    configure(celery_app, redis_settings)
    celery_app.conf.task_default_queue = queue
    env = {
        **os.environ,
        "FLEX_DATABASE_URL": settings.database.url,
        "FLEX_BROKER_URL": REDIS_URL,
        "FLEX_API_KEY_PEPPER": settings.security.api_key_pepper,
    }
    node = f"{queue}@localhost"
    command = [
        str(Path(sys.executable).parent / "celery"), "-A", "market.core.jobs:celery_app", "worker", "--pool=solo",
        "-Q", queue, "-n", node, "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel=WARNING",
    ]  # fmt: skip
    process = subprocess.Popen(  # noqa: S603 - the venv's own executables, fixed arguments
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not celery_app.control.ping(destination=[node], timeout=0.5):
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"the worker exited with {process.returncode}:\n{output[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not answer a ping within {START_TIMEOUT_S} s")
        yield RunningWorker(queue, redis_settings, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        celery_app.conf.task_default_queue = "celery"
        configure(celery_app, settings)
