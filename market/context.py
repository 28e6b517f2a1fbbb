"""What the market context contributes to the service."""

from __future__ import annotations

from market.auth.api import ApiKeyController
from market.clearing.api import ClearingController
from market.core.audit import AuditEventController
from market.core.contexts import Context
from market.dashboard.views import ROUTES as DASHBOARD_ROUTES
from market.grid.api import GridController
from market.markets.api import MarketController
from market.orders.api import FlexOfferController, FlexRequestController
from market.participants.api import ParticipantController, PortfolioController, SiteController

CONTEXT = Context(
    name="market",
    route_handlers=[
        ApiKeyController,
        MarketController,
        GridController,
        ParticipantController,
        SiteController,
        PortfolioController,
        FlexRequestController,
        FlexOfferController,
        ClearingController,
        AuditEventController,
        *DASHBOARD_ROUTES,  # mounted at /dashboard, outside /api/v1 (market.core.app)
    ],
    model_modules=[
        "market.markets.models",
        "market.participants.models",
        "market.grid.models",
        "market.auth.models",
        "market.orders.models",
        "market.core.idempotency",
        "market.clearing.models",
        "market.core.audit",
    ],
    task_modules=["market.clearing.tasks"],
    beat_schedule={
        "schedule-due-clearings": {"task": "market.clearing.schedule_due_clearings", "schedule": 60.0},
    },
)
