"""Settlement pages of the dashboard: settlement runs (operator), delivery vs baseline (sellers), statements (finance).

They live here, not in ``market.dashboard``, because ``market`` never imports ``settlement``; the
context registers them (``settlement.context``) and the app mounts them next to the market's pages.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.types import ControllerRouterHandler
from sqlalchemy.orm import Session

from market.auth.principal import Scope
from market.clearing import service as clearing
from market.core.db import utcnow
from market.core.queries import Page
from market.dashboard.layout import (
    DASHBOARD_PATH,
    Column,
    DashboardController,
    Series,
    h,
    line_chart,
    money,
    page,
    require_operator,
    table,
    viewer,
)
from market.dashboard.views import latest_run, my_offers
from market.markets.service import get_market
from settlement.delivery.service import lines_of_offer
from settlement.runs import service as runs
from settlement.statements import service as statement_service
from settlement.statements.render import RENDERERS

ALL = Page(limit=1_000, offset=0)
CHARTED_OFFERS = 8  # a page of charts stays readable; the API has the rest
Format = Literal["json", "csv", "pdf"]


class SettlementPages(DashboardController):
    path = DASHBOARD_PATH

    @get("/markets/{market_id:uuid}/settlements", sync_to_thread=True)
    def settlement_runs(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID]
    ) -> Response[str]:
        principal = require_operator(request, db_session)
        market = get_market(db_session, market_id)
        rows, _ = runs.list_runs(db_session, principal, market_id, None, ALL)
        body = table(
            [
                Column("day"),
                Column("kind"),
                Column("version", True),
                Column("status"),
                Column("lines", True),
                Column("utilisation", True),
                Column("penalties", True),
                Column("availability", True),
                Column("fees", True),
                Column("finished"),
            ],
            [
                (
                    r.delivery_day,
                    r.kind.value,
                    r.version,
                    r.status.value,
                    r.line_count,
                    money(r.total_utilisation),
                    money(r.total_penalty),
                    money(r.total_availability),
                    money(r.total_fee),
                    r.finished_at or "",
                )
                for r in rows
            ],
            "settlement-runs",
        )
        back = f'<p><a href="{DASHBOARD_PATH}/markets/{market.id}">back to the market</a> · {h(market.currency)}</p>'
        return page(f"Settlement runs of {market.code}", back + body, principal)

    @get("/me/delivery", sync_to_thread=True)
    def delivery(self, request: Request[Any, Any, Any], db_session: NamedDependency[Session]) -> Response[str]:
        """Per awarded offer of the latest clearing: baseline, actual and ordered power per ISP (kW)."""
        principal = viewer(request, db_session, Scope.TRADE)
        offers, _ = my_offers(db_session, principal, utcnow())
        awarded: list[uuid.UUID] = []
        for market_id in sorted({o.market_id for o in offers}):
            run = latest_run(db_session, market_id)
            if run is not None:
                awards, _ = clearing.awards_of(db_session, principal, run.id, ALL)
                awarded.extend(sorted({a.offer_id for a in awards}))
        zones = {o.id: ZoneInfo(get_market(db_session, o.market_id).timezone) for o in offers}
        parts: list[str] = []
        for offer_id in awarded[:CHARTED_OFFERS]:
            lines = lines_of_offer(db_session, principal, offer_id)
            if not lines:
                parts.append(f"<h2>Offer {h(offer_id)}</h2><p>No verified delivery yet.</p>")
                continue
            labels = [line.isp_start.astimezone(zones[offer_id]).strftime("%H:%M") for line in lines]
            chart = line_chart(
                labels,
                [
                    Series("baseline", "#1f77b4", [line.baseline_kw for line in lines]),
                    Series("actual", "#d62728", [line.actual_kw for line in lines]),
                    Series("ordered change", "#2ca02c", [line.ordered_kw for line in lines]),
                ],
                "kW",
            )
            delivered = sum(line.delivered_kw for line in lines)
            ordered = sum(line.ordered_kw for line in lines)
            parts.append(
                f'<h2>Offer {h(offer_id)}</h2><div class="delivery" data-offer="{h(offer_id)}">{chart}</div>'
                f"<p>Delivered {delivered:.3f} of {ordered:.3f} kW·ISP ordered ({h(lines[0].method)} baseline)</p>"
            )
        if not parts:
            parts.append("<p>No awarded offers in the latest clearing.</p>")
        return page("My delivery vs baseline", "".join(parts), principal)

    @get("/statements", sync_to_thread=True)
    def statements(self, request: Request[Any, Any, Any], db_session: NamedDependency[Session]) -> Response[str]:
        principal = viewer(request, db_session, Scope.FINANCE)
        rows, _ = statement_service.list_statements(db_session, principal, principal.participant_id, ALL)
        items = "".join(
            f"<tr><td>{h(s.number)}</td><td>{h(s.period_start)} – {h(s.period_end)}</td>"
            f'<td class="num">{h(money(s.amount_due))} {h(s.currency)}</td><td>{h(s.issued_at)}</td><td>'
            + " ".join(
                f'<a class="download" data-format="{f}" href="{DASHBOARD_PATH}/statements/{s.id}/document?format={f}"'
                f" download>{f.upper()}</a>"
                for f in ("csv", "pdf", "json")
            )
            + "</td></tr>"
            for s in rows
        )
        body = (
            '<table id="statements"><tr><th>number</th><th>period</th><th>amount due</th><th>issued</th>'
            f"<th>download</th></tr>{items or '<tr><td colspan=5>none</td></tr>'}</table>"
        )
        return page("My statements", body, principal)

    @get("/statements/{statement_id:uuid}/document", sync_to_thread=True)
    def document(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[Session],
        statement_id: FromPath[uuid.UUID],
        format: Annotated[Format, QueryParameter()] = "csv",  # noqa: A002 - the API's own parameter name
    ) -> Response[bytes]:
        """The same bytes as ``GET /api/v1/statements/{id}/document?format=...``."""
        principal = viewer(request, db_session, Scope.FINANCE)
        statement = statement_service.get_statement(db_session, principal, statement_id)
        media_type, render = RENDERERS[format]
        body = render(statement_service.document_of(db_session, statement))
        name = f"statement-{statement.number}.{format}"
        return Response(
            content=body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )


ROUTES: list[ControllerRouterHandler] = [SettlementPages]
