"""The demo's settlement stage and report.

* The report is pure (plain data in, HTML out): the merit-order curve by hand, its shape as a
  property, and one self-contained file (plotly inlined once, no CDN, text escaped).
* Meter files: kWh = kW × 0.25 split into import and export, to the watt-hour.
* The whole demo day on PostgreSQL with a real Celery worker on Redis (the production mode of
  ``flexmarket --database-url ... --broker-url ... demo``): uploads and the statement job are queued
  (202) and the demo waits for them; the grid is the SimBench data set's; the books balance and the
  files are written.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.core.config import Settings
from market.demo import Seller, grid_points, run_demo
from market.demo_data.simbench_lv import load_lv_grids
from settlement.demo import STATEMENTS_DIR, SiteModel, meter_csv
from settlement.metering.models import MeterFile, MeterFileStatus
from settlement.report import (
    DeliverySeries,
    MeritOrder,
    MeritStep,
    PriceSeries,
    ReportData,
    build_report,
    merit_order_curve,
)
from tests.integration.workers import celery_worker


def test_the_merit_order_curve_steps_up_in_price_order() -> None:
    steps = [MeritStep("B", 200, 5, 0), MeritStep("A", 100, 10, 10), MeritStep("C", 150, 2.5, 1)]
    xs, ys = merit_order_curve(steps)
    # A 10 kW at 100, then C 2.5 kW at 150, then B 5 kW at 200.
    assert xs == [0, 10, 10, 12.5, 12.5, 17.5]
    assert ys == [100, 100, 150, 150, 200, 200]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3000), st.floats(0.1, 500, allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=30,
    )
)
def test_the_merit_order_curve_is_monotone_and_covers_every_offer(offers: list[tuple[int, float]]) -> None:
    xs, ys = merit_order_curve([MeritStep(str(i), p, kw, 0) for i, (p, kw) in enumerate(offers)])
    assert xs[0] == 0
    assert xs[-1] == pytest.approx(sum(kw for _, kw in offers))
    assert all(a <= b for a, b in pairwise(xs))
    assert all(a <= b for a, b in pairwise(ys))
    assert sorted(set(ys)) == sorted({p for p, _ in offers})


def test_the_report_is_one_offline_file_with_every_plot() -> None:
    data = ReportData(
        title="Demo <day>",
        subtitle="a & b",
        facts=[("Delivery day", "2026-12-09")],
        prices=[PriceSeries("TR-1-F1", ["2026-12-09 17:00", "2026-12-09 17:15"], [150, 200], [100, 120], [100, 110])],
        merit=MeritOrder("TR-1-F1", "2026-12-09 17:15", [MeritStep("DC 1", 150, 100, 100)], 220, 120, 200),
        deliveries=[
            DeliverySeries(
                "Home 003", ["2026-12-09 17:00", "2026-12-09 17:15"], [1.0, 0.5], [4.0, None], [0.5, None], "ok"
            )
        ],
        money=[("Utility's total cost", "315.33"), ("Trial balance (must be 0)", "0.00")],
        files=["flexmarket-statements/X-000001-utility.pdf"],
    )
    html = build_report(data)
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("plotly.js v") == 1  # inlined once, for every figure
    assert "<script src=" not in html  # no CDN: it works offline
    assert html.count('class="plotly-graph-div"') == 3  # prices, merit order, one delivery
    assert "Demo &lt;day&gt;" in html
    assert "a &amp; b" in html
    assert "Utility&#x27;s total cost" in html
    assert "315.33" in html
    assert "X-000001-utility.pdf" in html
    without_merit = build_report(ReportData(title="t", subtitle="s", prices=data.prices))
    assert without_merit.count('class="plotly-graph-div"') == 1


def _model(meter: str) -> SiteModel:
    site = {"id": str(uuid.uuid4()), "meter_code": meter, "portfolio_id": None}
    return SiteModel(Seller(meter, "p", "", site, [], "F"), np.zeros(96), 1.0, 0.0)


def test_a_meter_file_splits_import_and_export_to_the_watt_hour() -> None:
    starts = [datetime(2026, 12, 9, 16, tzinfo=UTC) + timedelta(minutes=15 * k) for k in range(2)]
    body = meter_csv([_model("EAN-1"), _model("EAN-2")], starts, np.array([[4.0, -2.0], [1.2345, 0.0]]))
    frame = pl.read_csv(io.BytesIO(body))
    assert frame.columns == ["meter", "isp_start", "import_kwh", "export_kwh"]
    # kWh = kW × 0.25: 4 kW → 1 kWh import; −2 kW → 0.5 kWh export; 1.2345 kW → 0.309 kWh (to the Wh).
    assert frame.rows() == [
        ("EAN-1", "2026-12-09T16:00:00+00:00", 1.0, 0.0),
        ("EAN-1", "2026-12-09T16:15:00+00:00", 0.0, 0.5),
        ("EAN-2", "2026-12-09T16:00:00+00:00", 0.309, 0.0),
        ("EAN-2", "2026-12-09T16:15:00+00:00", 0.0, 0.0),
    ]


@pytest.fixture
def worker(settings: Settings) -> Iterator[Settings]:
    with celery_worker(settings, "flex-demo") as running:
        yield running.settings


def test_the_demo_day_runs_on_postgresql_with_a_worker(worker: Settings, db: Session, tmp_path: Path) -> None:
    out = io.StringIO()
    report = run_demo(worker, console=Console(file=out, width=160), households=36, output_dir=tmp_path)
    printed = out.getvalue()

    # The grid is the shipped SimBench data set's: ZONE-1 over TR-1..TR-3 and their feeders TR-t-Ff.
    assert set(report["points"].values()) == {"ZONE-1", *(code for code, _, _ in grid_points(load_lv_grids()))}
    assert "1-LV-rural3--0-sw" in printed

    # The worker processed every meter file (the API queued them: no readings without it).
    files = db.scalars(select(MeterFile.status)).all()
    assert len(files) == 15
    assert set(files) == {MeterFileStatus.DONE}
    assert db.scalar(select(func.count()).select_from(MeterFile)) == 15

    settled = report["settlement"]
    assert settled["trial_balance"]["balanced"] is True
    money = settled["money"]
    assert money["utilisation"] > 0
    # Σ over everyone is 0: what the utility pays is what sellers, members, the aggregator and the operator get.
    assert (
        money["centers"] + money["directs"] + money["members"] + money["aggregator"] + money["fee"] == -money["utility"]
    )
    assert money["utility"] == money["penalty"] - money["utilisation"]
    assert settled["issued"] > 2
    assert "Statements issued" in printed
    assert "Trial balance (must be 0)" in printed
    assert (tmp_path / "flexmarket-report.html").exists()
    assert sorted(p.suffix for p in (tmp_path / STATEMENTS_DIR).iterdir()).count(".pdf") >= 2
    assert all(isinstance(v, Decimal) for v in money.values())
