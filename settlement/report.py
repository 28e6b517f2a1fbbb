"""The demo's HTML report, pure: plain data in, one self-contained HTML string out (no I/O).

Plots (plotly, with its JavaScript inlined once so the file works offline, without a CDN):

* prices over the day: the locational price per congestion point and ISP (pay as clear, MARKET.md);
* the merit-order curve of one point and ISP: the offers that relieve it sorted by price against
  cumulative kW, with the utility's maximum price, the requested kW and the clearing price;
* delivery against baseline for a few sites: actual kW over the day, the baseline used in
  settlement, and the target ``baseline − ordered`` in the awarded ISPs
  (delivered = baseline − actual for ``up``, MARKET.md);

and a table of the money (the settlement run's totals and who paid or received what).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import plotly.graph_objects as go
import plotly.io as pio


@dataclass(frozen=True)
class PriceSeries:
    """One congestion point's price per ISP (ISPs without a request are left out)."""

    point: str
    isp_starts: list[str]
    """Local ISO 8601 times."""
    price_per_mwh: list[float]
    requested_kw: list[float]
    procured_kw: list[float]


@dataclass(frozen=True)
class MeritStep:
    """A tranche of an offer in the merit order: ``kw`` offered at ``price_per_mwh``, ``accepted_kw`` of it won."""

    label: str
    price_per_mwh: float
    kw: float
    accepted_kw: float


@dataclass(frozen=True)
class MeritOrder:
    point: str
    isp_start: str
    steps: list[MeritStep]
    max_price_per_mwh: float
    requested_kw: float
    clearing_price_per_mwh: float | None


@dataclass(frozen=True)
class DeliverySeries:
    """A site's day: ``actual_kw`` over every ISP; ``baseline_kw`` and ``target_kw`` (baseline − ordered)
    where it was awarded (None elsewhere)."""

    label: str
    isp_starts: list[str]
    actual_kw: list[float | None]
    baseline_kw: list[float | None]
    target_kw: list[float | None]
    note: str = ""


@dataclass(frozen=True)
class ReportData:
    title: str
    subtitle: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    prices: list[PriceSeries] = field(default_factory=list)
    merit: MeritOrder | None = None
    deliveries: list[DeliverySeries] = field(default_factory=list)
    money: list[tuple[str, str]] = field(default_factory=list)
    """(what, amount) rows, amounts already formatted (money is Decimal; the report only shows it)."""
    files: list[str] = field(default_factory=list)


_LAYOUT = {"template": "plotly_white", "height": 420, "margin": {"l": 60, "r": 20, "t": 60, "b": 50}}


def prices_figure(series: list[PriceSeries]) -> go.Figure:
    figure = go.Figure()
    for s in series:
        figure.add_trace(
            go.Scatter(
                x=s.isp_starts,
                y=s.price_per_mwh,
                mode="lines+markers",
                line_shape="hv",
                name=s.point,
                customdata=list(zip(s.requested_kw, s.procured_kw, strict=True)),
                hovertemplate="%{x}<br>%{y} EUR/MWh<br>requested %{customdata[0]} kW, procured %{customdata[1]} kW",
            )
        )
    figure.update_layout(
        title="Prices over the day per congestion point",
        xaxis_title="ISP (local time)",
        yaxis_title="EUR/MWh",
        **_LAYOUT,
    )
    return figure


def merit_order_curve(steps: list[MeritStep]) -> tuple[list[float], list[float]]:
    """The supply curve as a step line: x = cumulative kW, y = price, steps in ascending price.

    Each step contributes the points (start kW, price) and (end kW, price)."""
    xs: list[float] = []
    ys: list[float] = []
    start = 0.0
    for step in sorted(steps, key=lambda s: s.price_per_mwh):
        # Each step starts where the previous one ended (not end − kW: that can fall back by a rounding).
        end = start + step.kw
        xs += [start, end]
        ys += [step.price_per_mwh, step.price_per_mwh]
        start = end
    return xs, ys


def merit_figure(merit: MeritOrder) -> go.Figure:
    xs, ys = merit_order_curve(merit.steps)
    ordered = sorted(merit.steps, key=lambda s: s.price_per_mwh)
    starts = xs[0::2]  # each step's first cumulative kW
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="offers (supply curve)", line={"width": 2}))
    figure.add_trace(
        go.Bar(
            x=[start + s.accepted_kw / 2 for start, s in zip(starts, ordered, strict=True)],
            y=[s.price_per_mwh for s in ordered],
            width=[s.accepted_kw for s in ordered],
            name="accepted",
            opacity=0.35,
            hovertext=[f"{s.label}: {s.accepted_kw:g} of {s.kw:g} kW" for s in ordered],
        )
    )
    figure.add_hline(
        y=merit.max_price_per_mwh,
        line_dash="dash",
        line_color="firebrick",
        annotation_text=f"request max price {merit.max_price_per_mwh:g}",
    )
    figure.add_vline(
        x=merit.requested_kw, line_dash="dot", line_color="gray", annotation_text=f"requested {merit.requested_kw:g} kW"
    )
    if merit.clearing_price_per_mwh is not None:
        figure.add_hline(
            y=merit.clearing_price_per_mwh,
            line_color="seagreen",
            annotation_text=f"clearing price {merit.clearing_price_per_mwh:g}",
            annotation_position="bottom right",
        )
    figure.update_layout(
        title=f"Merit order at {merit.point}, ISP {merit.isp_start}",
        xaxis_title="cumulative kW offered",
        yaxis_title="EUR/MWh",
        bargap=0,
        **_LAYOUT,
    )
    return figure


def delivery_figure(series: DeliverySeries) -> go.Figure:
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=series.isp_starts, y=series.actual_kw, name="actual", line_shape="hv"))
    figure.add_trace(
        go.Scatter(x=series.isp_starts, y=series.baseline_kw, name="baseline", line_shape="hv", line={"dash": "dash"})
    )
    if any(v is not None for v in series.target_kw):  # a portfolio member has no order of its own
        figure.add_trace(
            go.Scatter(
                x=series.isp_starts,
                y=series.target_kw,
                name="baseline − ordered",
                line_shape="hv",
                line={"dash": "dot"},
            )
        )
    title = series.label + (f" ({series.note})" if series.note else "")
    figure.update_layout(title=title, xaxis_title="ISP (local time)", yaxis_title="kW (net consumption)", **_LAYOUT)
    return figure


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    body = "".join(f"<tr><td>{html.escape(a)}</td><td class='num'>{html.escape(b)}</td></tr>" for a, b in rows)
    return (
        f"<table><thead><tr><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th></tr></thead>{body}</table>"
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section { margin: 2rem 0; }
"""


def build_report(data: ReportData) -> str:
    """The report as one HTML document: plotly's JavaScript is inlined with the first figure only."""
    figures: list[go.Figure] = []
    if data.prices:
        figures.append(prices_figure(data.prices))
    if data.merit is not None and data.merit.steps:
        figures.append(merit_figure(data.merit))
    figures += [delivery_figure(s) for s in data.deliveries]
    plots = [
        pio.to_html(f, full_html=False, include_plotlyjs=(i == 0), default_width="100%", default_height="420px")
        for i, f in enumerate(figures)
    ]
    files = "".join(f"<li><code>{html.escape(name)}</code></li>" for name in data.files)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(data.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(data.title)}</h1><p class='sub'>{html.escape(data.subtitle)}</p>",
        f"<section>{_table(data.facts, ('', ''))}</section>" if data.facts else "",
        *(f"<section>{plot}</section>" for plot in plots),
        f"<section><h2>Money</h2>{_table(data.money, ('', 'EUR'))}</section>" if data.money else "",
        f"<section><h2>Statements downloaded</h2><ul>{files}</ul></section>" if files else "",
        "</body></html>",
    ]
    return "\n".join(parts)
