"""What the settlement context contributes to the service (found through the entry point)."""

from __future__ import annotations

from market.core.contexts import Context
from settlement.baselines.api import ROUTES as BASELINE_ROUTES
from settlement.dashboard import ROUTES as DASHBOARD_ROUTES
from settlement.delivery.api import ROUTES as DELIVERY_ROUTES
from settlement.ledger.api import ROUTES as LEDGER_ROUTES
from settlement.metering.api import ROUTES as METERING_ROUTES
from settlement.runs.api import ROUTES as RUN_ROUTES
from settlement.statements.api import ROUTES as STATEMENT_ROUTES

CONTEXT = Context(
    name="settlement",
    route_handlers=[
        *METERING_ROUTES,
        *BASELINE_ROUTES,
        *DELIVERY_ROUTES,
        *RUN_ROUTES,
        *LEDGER_ROUTES,
        *STATEMENT_ROUTES,
        *DASHBOARD_ROUTES,  # the dashboard's settlement pages, mounted at /dashboard (market.core.app)
    ],
    model_modules=[
        "settlement.metering.models",
        "settlement.baselines.models",
        "settlement.delivery.models",
        "settlement.runs.models",
        "settlement.ledger.models",
        "settlement.statements.models",
    ],
    task_modules=[
        "settlement.metering.tasks",
        "settlement.delivery.tasks",
        "settlement.runs.tasks",
        "settlement.statements.tasks",
    ],
    beat_schedule={
        # Beat only wakes these; what is due is read from the database.
        "schedule-settlements": {"task": "settlement.runs.schedule_settlements", "schedule": 60.0},
        "resend-pending-meter-files": {"task": "settlement.metering.resend_pending_meter_files", "schedule": 60.0},
    },
    # flexmarket demo: baselines before the gate; meter data, delivery, settlement, statements, report after.
    demo_stages=["settlement.demo:STAGE"],
)
