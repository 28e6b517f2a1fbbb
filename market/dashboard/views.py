"""Market pages of the dashboard: sign-in, home, a market (grid, order book, clearing, price heat map), my orders.

Pages read through the same services as the API, handing them the signed-in principal, so each
participant sees exactly what the API would show it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect
from litestar.types import ControllerRouterHandler
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.auth.service import authenticate
from market.clearing import service as clearing
from market.clearing.models import ClearingRun, FlexOrderAward, PointPrice
from market.core.db import utcnow
from market.core.queries import Page
from market.dashboard.layout import (
    DASHBOARD_PATH,
    SESSION_COOKIE,
    Column,
    DashboardController,
    LoginRequired,
    h,
    heat_colour,
    money,
    page,
    require_operator,
    table,
    viewer,
)
from market.grid.models import CongestionPoint
from market.grid.service import list_congestion_points
from market.markets.models import Market
from market.markets.service import get_market, list_markets
from market.orders import service as orders
from market.orders.models import FlexOffer, FlexRequest
from market.orders.schemas import FlexOfferRead
from market.participants.service import list_sites

ALL = Page(limit=1_000, offset=0)


def _login_form(error: str = "") -> str:
    message = f'<p class="error" id="login-error">{h(error)}</p>' if error else ""
    return (
        f'{message}<form method="post" action="{DASHBOARD_PATH}/login" id="login">'
        '<label>API key <input type="password" name="api_key" autocomplete="off" size="60" required></label> '
        "<button>Sign in</button></form><p>Use an API key (fmk_...). It is kept in an HttpOnly cookie for this "
        "browser session and checked again on every page.</p>"
    )


def latest_run(session: Session, market_id: uuid.UUID) -> ClearingRun | None:
    """The clearing run of the market's latest delivery day."""
    runs, _ = clearing.list_runs(session, market_id, Page(limit=1, offset=0))
    return runs[0] if runs else None


def my_offers(session: Session, principal: Principal, now: datetime) -> tuple[list[FlexOfferRead], int]:
    """The caller's offers (all, for the operator), newest 200, through the API's own listing."""
    return orders.list_offers(
        session,
        principal,
        Page(limit=200, offset=0),
        now,
        market_id=None,
        congestion_point_id=None,
        direction=None,
        state=None,
        delivery_from=None,
        delivery_to=None,
    )


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%H:%M")


def _tree(points: list[CongestionPoint]) -> str:
    """The grid as nested lists, parents before children (MARKET.md, Grid)."""
    children: dict[uuid.UUID | None, list[CongestionPoint]] = defaultdict(list)
    for point in sorted(points, key=lambda p: p.code):
        children[point.parent_id].append(point)

    def branch(parent: uuid.UUID | None) -> str:
        items = "".join(
            f"<li><code>{h(p.code)}</code> {h(p.name)} ({h(p.kind.value)}){branch(p.id)}</li>"
            for p in children.get(parent, [])
        )
        return f'<ul class="tree">{items}</ul>' if items else ""

    known = {p.id for p in points}
    roots = [p for p in points if p.parent_id is None or p.parent_id not in known]
    return "".join(branch(p.parent_id) for p in {r.parent_id: r for r in roots}.values())


def heat_map(prices: list[PointPrice], points: dict[uuid.UUID, CongestionPoint], zone: ZoneInfo) -> str:
    """Clearing price per congestion point (rows) × ISP (columns), one table per direction.

    A cell's colour places its price between the day's lowest and highest price (the legend); cells
    where nothing was procured stay blank.
    """
    if not prices:
        return "<p>No prices: nothing was cleared.</p>"
    traded = [p.price_per_mwh for p in prices if p.procured_kw > 0]
    low, high = (min(traded), max(traded)) if traded else (Decimal(0), Decimal(0))
    isps = sorted({p.isp_start for p in prices})
    parts = [
        f'<div class="legend">{h(money(low))}<span class="bar"></span>{h(money(high))} per MWh '
        "(blank: nothing procured)</div>"
    ]
    for direction in sorted({p.direction for p in prices}):
        cells = {(p.congestion_point_id, p.isp_start): p for p in prices if p.direction == direction}
        rows_of = sorted(
            {p.congestion_point_id for p in prices if p.direction == direction}, key=lambda i: points[i].code
        )
        head = "".join(f"<th>{h(_local(isp, zone)) if isp.astimezone(zone).minute == 0 else ''}</th>" for isp in isps)
        body = []
        for point_id in rows_of:
            row = [f"<th>{h(points[point_id].code)}</th>"]
            for isp in isps:
                cell = cells.get((point_id, isp))
                if cell is None or cell.procured_kw <= 0:
                    row.append('<td class="cell empty"></td>')
                    continue
                price = money(cell.price_per_mwh)
                tip = f"{points[point_id].code} {_local(isp, zone)}: {price}/MWh, {cell.procured_kw} kW"
                row.append(
                    f'<td class="cell" data-price="{h(cell.price_per_mwh)}" title="{h(tip)}" '
                    f'style="background:{heat_colour(cell.price_per_mwh, low, high)}">{h(price)}</td>'
                )
            body.append("<tr>" + "".join(row) + "</tr>")
        parts.append(
            f'<h3>Direction {h(direction)}</h3><table class="heatmap" data-direction="{h(direction)}">'
            f"<tr><th>point \\ ISP</th>{head}</tr>{''.join(body)}</table>"
        )
    return "".join(parts)


def _order_book(session: Session, market: Market, run: ClearingRun, points: dict[uuid.UUID, CongestionPoint]) -> str:
    """Orders per congestion point that overlap the run's horizon (revoked ones excluded)."""
    counts: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0, 0])
    models: tuple[type[FlexOffer] | type[FlexRequest], ...] = (FlexOffer, FlexRequest)
    for index, model in enumerate(models):
        rows = session.execute(
            select(model.congestion_point_id, func.count())
            .where(
                model.market_id == market.id,
                model.revoked_at.is_(None),
                model.period_end > run.horizon_start,
                model.period_start < run.horizon_end,
            )
            .group_by(model.congestion_point_id)
        )
        for point_id, count in rows:
            counts[point_id][index] = count
    rows_out = [
        (points[i].code if i in points else str(i), offers, requests)
        for i, (offers, requests) in sorted(
            counts.items(), key=lambda kv: points[kv[0]].code if kv[0] in points else ""
        )
    ]
    return table([Column("congestion point"), Column("offers", True), Column("requests", True)], rows_out, "order-book")


class DashboardPages(DashboardController):
    path = DASHBOARD_PATH

    @get("/", sync_to_thread=True)
    def home(self, request: Request[Any, Any, Any], db_session: NamedDependency[Session]) -> Response[str]:
        try:
            principal = viewer(request, db_session)
        except LoginRequired:
            return page("Sign in", _login_form())
        links: list[str] = []
        if principal.is_operator and Scope.ADMIN in principal.scopes:
            markets, _ = list_markets(db_session, ALL)
            links.extend(
                f'<li><a href="{DASHBOARD_PATH}/markets/{m.id}">{h(m.code)}</a> {h(m.name)} · '
                f'<a href="{DASHBOARD_PATH}/markets/{m.id}/settlements">settlement runs</a></li>'
                for m in markets
            )
        if Scope.TRADE in principal.scopes and not principal.is_operator:
            links.append(f'<li><a href="{DASHBOARD_PATH}/me">My offers and awards</a></li>')
            links.append(f'<li><a href="{DASHBOARD_PATH}/me/delivery">My delivery vs baseline</a></li>')
        if Scope.FINANCE in principal.scopes:
            links.append(f'<li><a href="{DASHBOARD_PATH}/statements">My statements</a></li>')
        body = f'<ul id="home-links">{"".join(links)}</ul>' if links else "<p>This key opens no dashboard page.</p>"
        return page("Dashboard", body, principal)

    @post("/login", sync_to_thread=True)
    def login(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[Session],
        data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[Any]:
        token = data.get("api_key", "").strip()
        principal = authenticate(db_session, token, request.app.state.api_key_pepper) if token else None
        if principal is None:
            return page("Sign in", _login_form("the API key is unknown or revoked"), status_code=401)
        response: Response[Any] = Redirect(path=DASHBOARD_PATH, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            path=DASHBOARD_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @post("/logout", sync_to_thread=False)
    def logout(self) -> Response[Any]:
        response: Response[Any] = Redirect(path=DASHBOARD_PATH, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=DASHBOARD_PATH)
        return response

    @get("/markets/{market_id:uuid}", sync_to_thread=True)
    def market(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[Session], market_id: FromPath[uuid.UUID]
    ) -> Response[str]:
        principal = require_operator(request, db_session)
        market = get_market(db_session, market_id)
        zone = ZoneInfo(market.timezone)
        point_rows, _ = list_congestion_points(db_session, market_id, ALL)
        points = {p.id: p for p in point_rows}
        parts = [
            f"<p>{h(market.name)} · {h(market.timezone)} · {market.isp_minutes}-minute ISPs · "
            f'{h(market.pricing_rule.value)} · <a href="{DASHBOARD_PATH}/markets/{market.id}/settlements">'
            "settlement runs</a></p><h2>Grid</h2>",
            _tree(point_rows),
        ]
        run = latest_run(db_session, market_id)
        if run is None:
            parts.append("<p>No clearing run yet.</p>")
        else:
            parts.append(f"<h2>Order book for {h(run.delivery_day)}</h2>")
            parts.append(_order_book(db_session, market, run, points))
            parts.append("<h2>Clearing result</h2>")
            parts.append(
                table(
                    [
                        Column("day"),
                        Column("status"),
                        Column("welfare", True),
                        Column("offers", True),
                        Column("requests", True),
                        Column("awards", True),
                        Column("result hash"),
                    ],
                    [
                        (
                            run.delivery_day,
                            run.status.value,
                            money(run.welfare),
                            run.offer_count,
                            run.request_count,
                            run.award_count,
                            run.result_hash[:16],
                        )
                    ],
                    "clearing-run",
                )
            )
            parts.append(f"<h2>Prices ({h(market.currency)}/MWh), congestion point × ISP ({h(market.timezone)})</h2>")
            parts.append(heat_map(clearing.point_prices(db_session, run.id), points, zone))
        return page(f"Market {market.code}", "".join(parts), principal)

    @get("/me", sync_to_thread=True)
    def me(self, request: Request[Any, Any, Any], db_session: NamedDependency[Session]) -> Response[str]:
        principal = viewer(request, db_session, Scope.TRADE)
        now = utcnow()
        sites, _ = list_sites(db_session, principal, ALL)
        offers, total = my_offers(db_session, principal, now)
        parts = [
            "<h2>My sites</h2>",
            table([Column("meter code"), Column("name")], [(s.meter_code, s.name) for s in sites], "my-sites"),
            f"<h2>My offers ({total})</h2>",
            table(
                [
                    Column("offer"),
                    Column("direction"),
                    Column("ISPs", True),
                    Column("price/MWh", True),
                    Column("state"),
                ],
                [
                    (
                        o.id,
                        o.direction.value,
                        len(o.isps),
                        "" if o.price_per_mwh is None else money(o.price_per_mwh),
                        o.state.value,
                    )
                    for o in offers
                ],
                "my-offers",
            ),
        ]
        awards: list[FlexOrderAward] = []
        for market_id in sorted({o.market_id for o in offers}):
            run = latest_run(db_session, market_id)
            if run is not None:
                awards.extend(clearing.awards_of(db_session, principal, run.id, ALL)[0])
        per_offer: dict[uuid.UUID, list[FlexOrderAward]] = defaultdict(list)
        for award in awards:
            per_offer[award.offer_id].append(award)
        parts.append("<h2>My awards (latest clearing)</h2>")
        parts.append(
            table(
                [
                    Column("offer"),
                    Column("ISPs", True),
                    Column("energy kWh", True),
                    Column("first ISP"),
                    Column("price/MWh", True),
                ],
                [
                    (
                        offer_id,
                        len(rows),
                        f"{sum(a.accepted_kw for a in rows) / 4:.3f}",
                        min(a.isp_start for a in rows),
                        money(max(a.price_per_mwh for a in rows)),
                    )
                    for offer_id, rows in sorted(per_offer.items())
                ],
                "my-awards",
            )
        )
        return page("My offers and awards", "".join(parts), principal)


ROUTES: list[ControllerRouterHandler] = [DashboardPages]
