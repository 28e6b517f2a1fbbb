"""Dashboard building blocks: the session cookie, the page layout, HTML escaping and offline charts.

Every page re-authenticates the key in the cookie with :func:`market.auth.service.authenticate`, the
check the API's middleware uses, so a revoked key is refused on the next page.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from typing import Any

from litestar import Controller, Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect
from sqlalchemy.orm import Session

from market.auth.principal import Principal, Scope
from market.auth.service import authenticate
from market.core.audit import bind_principal
from market.core.errors import Forbidden, MarketError, NotFound

log = logging.getLogger("flexmarket.dashboard")

DASHBOARD_PATH = "/dashboard"
SESSION_COOKIE = "flexmarket_dashboard"
HTML = "text/html; charset=utf-8"


def h(value: object) -> str:
    """HTML-escape any value for text and attribute positions."""
    return escape(str(value), quote=True)


class LoginRequired(Exception):
    """No valid key in the session cookie: send the browser to the sign-in form."""


class DashboardController(Controller):
    """Base of every dashboard controller; the app mounts these at the root, not under ``/api/v1``."""

    include_in_schema = False


def is_dashboard(handler: object) -> bool:
    """Whether a context's route handler belongs to the dashboard (mounted outside ``/api/v1``)."""
    return isinstance(handler, type) and issubclass(handler, DashboardController)


def viewer(request: Request[Any, Any, Any], session: Session, scope: Scope | None = None) -> Principal:
    """The principal of the key in the session cookie, checked now; ``scope`` is required if given.

    Raises :class:`LoginRequired` for no, an unknown or a revoked key and :class:`Forbidden` for a
    missing scope: the same rules as the API (``market.core.http.requires``).
    """
    token = request.cookies.get(SESSION_COOKIE, "")
    principal = authenticate(session, token, request.app.state.api_key_pepper) if token else None
    if principal is None:
        raise LoginRequired
    bind_principal(principal)
    if scope is not None and scope not in principal.scopes:
        raise Forbidden(detail=f"this page needs an API key with the scope {scope.value!r}")
    return principal


def require_operator(request: Request[Any, Any, Any], session: Session) -> Principal:
    """Operator pages: the operator role with the ``admin`` scope, as the operator's API routes ask."""
    principal = viewer(request, session, Scope.ADMIN)
    principal.require_operator()
    return principal


# -- layout -------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff}header form{margin-left:auto}main{padding:1em 1.2em}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1.2em}
th,td{border:1px solid #d5dae1;padding:.2em .5em;text-align:left}td.num{text-align:right}
.heatmap td.cell{width:14px;height:18px;padding:0;font-size:0}.heatmap th{font-size:10px;white-space:nowrap}
.legend{display:flex;align-items:center;gap:.5em}.legend span.bar{width:200px;height:12px;
background:linear-gradient(to right,#ffffcc,#fd8d3c,#bd0026)}
.error{color:#b00020}ul.tree{margin:.2em 0}svg{background:#fff;border:1px solid #d5dae1}
"""


def page(title: str, body: str, principal: Principal | None = None, status_code: int = 200) -> Response[str]:
    """A whole HTML page. ``body`` is already-escaped HTML; ``title`` is text."""
    nav = ""
    if principal is not None:
        nav = (
            f'<a href="{DASHBOARD_PATH}">Home</a><span>{h(principal.role.value)}</span>'
            f'<form method="post" action="{DASHBOARD_PATH}/logout"><button>Sign out</button></form>'
        )
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{h(title)} · flexmarket</title>'
        f"<style>{_CSS}</style></head><body><header><strong>flexmarket</strong>{nav}</header>"
        f"<main><h1>{h(title)}</h1>{body}</main></body></html>"
    )
    return Response(content=html, media_type=HTML, status_code=status_code)


@dataclass(frozen=True)
class Column:
    title: str
    numeric: bool = False


def table(columns: Sequence[Column], rows: Sequence[Sequence[object]], css_id: str = "") -> str:
    """A plain table; every cell is escaped."""
    head = "".join(f"<th>{h(c.title)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if c.numeric else ''}>{h(v)}</td>" for c, v in zip(columns, row, strict=True))
        + "</tr>"
        for row in rows
    )
    ident = f' id="{h(css_id)}"' if css_id else ""
    if not rows:
        body = f'<tr><td colspan="{len(columns)}">none</td></tr>'
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def money(value: Decimal) -> str:
    return f"{value:,.2f}"


# -- charts -------------------------------------------------------------------------------------


def heat_colour(value: Decimal, low: Decimal, high: Decimal) -> str:
    """Colour of ``value`` on the legend's scale: pale yellow (low) → orange → dark red (high).

    Linear interpolation in RGB between three stops (ColorBrewer YlOrRd ends and middle).
    """
    stops = ((0xFF, 0xFF, 0xCC), (0xFD, 0x8D, 0x3C), (0xBD, 0x00, 0x26))
    share = Decimal(0) if high <= low else (value - low) / (high - low)
    position = float(min(max(share, Decimal(0)), Decimal(1))) * 2
    first = min(int(position), 1)
    frac = position - first
    a, b = stops[first], stops[first + 1]
    return "#" + "".join(f"{round(x + (y - x) * frac):02x}" for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: Sequence[Decimal | None]


def line_chart(labels: Sequence[str], series: Sequence[Series], unit: str, width: int = 640, height: int = 200) -> str:
    """An inline SVG line chart; ``None`` breaks a line. Labels are drawn every few points."""
    pad_left, pad_bottom, pad_top = 48, 22, 10
    known = [v for s in series for v in s.values if v is not None]
    low = min([Decimal(0), *known])
    high = max([Decimal(1), *known])
    count = max(len(labels), 2)

    def x(i: int) -> float:
        return pad_left + (width - pad_left - 8) * i / (count - 1)

    def y(v: Decimal) -> float:
        return pad_top + float((high - v) / (high - low)) * (height - pad_top - pad_bottom)

    parts = [
        f'<svg class="chart" width="{width}" height="{height + 18}" viewBox="0 0 {width} {height + 18}" role="img">',
        f'<text x="2" y="{pad_top + 4}" font-size="10">{h(f"{high:.1f}")} {h(unit)}</text>',
        f'<text x="2" y="{height - pad_bottom}" font-size="10">{h(f"{low:.1f}")}</text>',
        f'<line x1="{pad_left}" y1="{y(Decimal(0)):.1f}" x2="{width - 8}" y2="{y(Decimal(0)):.1f}" stroke="#999"/>',
    ]
    step = max(len(labels) // 8, 1)
    parts.extend(
        f'<text x="{x(i):.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{h(label)}</text>'
        for i, label in enumerate(labels)
        if i % step == 0
    )
    for s in series:
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        parts.extend(
            f'<polyline class="series" data-series="{h(s.name)}" fill="none" stroke="{h(s.colour)}" '
            f'stroke-width="2" points="{" ".join(points)}"/>'
            for points in runs
            if points
        )
    legend_x = pad_left
    for s in series:
        parts.append(
            f'<rect x="{legend_x}" y="{height + 6}" width="10" height="10" fill="{h(s.colour)}"/>'
            f'<text x="{legend_x + 14}" y="{height + 15}" font-size="11">{h(s.name)}</text>'
        )
        legend_x += 14 + 8 * len(s.name) + 16
    parts.append("</svg>")
    return "".join(parts)


# -- errors -------------------------------------------------------------------------------------


def _login_required(_: Request[Any, Any, Any], __: LoginRequired) -> Response[Any]:
    return Redirect(path=DASHBOARD_PATH, status_code=303)


def _market_error(_: Request[Any, Any, Any], exc: MarketError) -> Response[str]:
    status = 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, Forbidden) else 400
    return page("Not allowed" if status == 403 else "Error", f'<p class="error">{h(exc.detail)}</p>', None, status)  # noqa: PLR2004


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[str]:
    return page("Error", f'<p class="error">{h(exc.detail)}</p>', None, exc.status_code)


# HTML pages and a redirect to sign in, instead of the API's problem+json.
def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return page("Error", '<p class="error">an internal error occurred; it has been logged</p>', None, 500)


DashboardController.exception_handlers = {
    Exception: _internal_error,
    LoginRequired: _login_required,
    MarketError: _market_error,
    HTTPException: _http_error,
}
