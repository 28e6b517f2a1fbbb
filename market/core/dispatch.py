"""Requests that start a job: run at once in the embedded mode, handed to a worker otherwise.

Both go through the request's ``Idempotency-Key``: a replay answers as the first request did and
neither runs the job nor sends the task again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from sqlalchemy.orm import Session

from market.auth.principal import Principal
from market.core.idempotency import Idempotency


def run_or_enqueue(
    request: Request[Any, Any, Any],
    session: Session,
    principal: Principal,
    idempotency: Idempotency,
    *,
    run: Callable[[], Any],
    enqueue: Callable[[], Any],
) -> Response[Any]:
    """Tasks in-process (``FLEX_BROKER_URL=in-process``): ``run()`` now and answer 201 with its result.
    With workers: ``enqueue()`` sends the task (validate before calling this, so errors come at once)
    and returns what to answer, with 202."""
    if request.app.state.tasks_in_process:
        return idempotency.run(session, principal, run)
    return idempotency.run(session, principal, enqueue, status_code=202)
