"""Invariants of every method on random small histories (kW in quarter-kW steps, so sums are exact and ties
are real ties, not rounding noise)."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from settlement.baselines.methods import BaselineMethod, BaselineParams, compute_baselines
from tests.unit.baselines.builders import READING_SCHEMA, events

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLOTS = 8
DAYS = 16
LIKE_DAY = [BaselineMethod.HIGH_X_OF_Y, BaselineMethod.MIDDLE_X_OF_Y, BaselineMethod.Y_DAY_AVERAGE]
PARAMS = {
    BaselineMethod.HIGH_X_OF_Y: BaselineParams(x=2, y=3, adjustment_window=2, adjustment_gap=1),
    BaselineMethod.MIDDLE_X_OF_Y: BaselineParams(x=1, y=3, adjust=True, adjustment_window=2, adjustment_gap=0),
    BaselineMethod.Y_DAY_AVERAGE: BaselineParams(y=3, adjustment_window=1, adjustment_gap=1),
    BaselineMethod.METER_BEFORE_AFTER: BaselineParams(before_slots=2, after_slots=1, use_after=True),
}


@st.composite
def histories(draw: st.DrawFn, *, gaps: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """1-3 resources, 16 days from a random start, slots 0..7, optional gaps; one event per resource in the last
    4 days with a window inside slots 3..6 (so meter after has slot 7)."""
    start = date(2025, 1, 1) + timedelta(days=draw(st.integers(0, 364)))
    n = draw(st.integers(1, 3))
    values = st.integers(-8, 40).map(lambda q: q / 4)
    rows = []
    for resource in range(n):
        for day in range(DAYS):
            for slot in range(SLOTS):
                if gaps and draw(st.integers(0, 30)) == 0:
                    continue
                rows.append((resource, start + timedelta(days=day), slot, draw(values)))
    targets = []
    for resource in range(n):
        first = draw(st.integers(3, 6))
        targets.append((resource, start + timedelta(days=draw(st.integers(DAYS - 4, DAYS - 1))), first,
                        draw(st.integers(first, 6))))  # fmt: skip
    return pl.DataFrame(rows, schema=READING_SCHEMA, orient="row"), events(*targets)


@SETTINGS
@given(st.data(), st.sampled_from(list(PARAMS)), st.integers(-20, 80).map(lambda q: q / 4))
def test_a_constant_load_has_that_constant_as_baseline(data: st.DataObject, method: BaselineMethod, kw: float) -> None:
    readings, targets = data.draw(histories(gaps=False))
    readings = readings.with_columns(kw=pl.lit(kw))
    out = compute_baselines(method, PARAMS[method], readings, targets)
    if method in LIKE_DAY:  # 16 days always hold 3 weekdays and 3 weekend days before the event
        assert out["baseline_kw"].null_count() == 0
    assert out["baseline_kw"].drop_nulls().to_list() == [kw] * (out.height - out["baseline_kw"].null_count())


@SETTINGS
@given(histories(), st.sampled_from(LIKE_DAY))
def test_unadjusted_baseline_lies_within_the_history_of_its_slot(
    history: tuple[pl.DataFrame, pl.DataFrame], method: BaselineMethod
) -> None:
    readings, targets = history
    out = compute_baselines(method, BaselineParams(x=2 if method is not BaselineMethod.MIDDLE_X_OF_Y else 1, y=3,
                                                   adjust=False), readings, targets)  # fmt: skip
    bounds = (
        readings.join(targets.select("resource", pl.col("day").alias("event_day")), on="resource")
        .filter(pl.col("day") < pl.col("event_day"))
        .group_by("resource", "slot")
        .agg(pl.col("kw").min().alias("low"), pl.col("kw").max().alias("high"))
    )
    checked = out.drop_nulls().join(bounds, on=["resource", "slot"])
    assert checked.height == out.drop_nulls().height
    assert checked.filter((pl.col("baseline_kw") < pl.col("low")) | (pl.col("baseline_kw") > pl.col("high"))).is_empty()


@SETTINGS
@given(histories(), st.sampled_from(list(PARAMS)), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(history: tuple[pl.DataFrame, pl.DataFrame], method: BaselineMethod, rng) -> None:
    readings, targets = history
    order = list(range(readings.height))
    rng.shuffle(order)
    event_order = list(range(targets.height))
    rng.shuffle(event_order)
    shuffled = compute_baselines(method, PARAMS[method], readings[order], targets[event_order], with_actual=True)
    assert_frame_equal(shuffled, compute_baselines(method, PARAMS[method], readings, targets, with_actual=True))


@SETTINGS
@given(histories(), st.sampled_from(LIKE_DAY))
def test_two_events_of_a_resource_equal_two_runs_excluding_each_other(
    history: tuple[pl.DataFrame, pl.DataFrame], method: BaselineMethod
) -> None:
    """A resource with two event days is computed in layers; it must equal one run per event with the other event
    day passed as excluded."""
    readings, targets = history
    first = targets.row(0, named=True)
    other_day = first["day"] - timedelta(days=2)
    second = events((first["resource"], other_day, first["first_slot"], first["last_slot"]))
    both = compute_baselines(method, PARAMS[method], readings, pl.concat([targets, second]))
    alone = pl.concat(
        [
            compute_baselines(method, PARAMS[method], readings, targets, excluded_days=second),
            compute_baselines(method, PARAMS[method], readings, second, excluded_days=targets),
        ]
    ).sort("resource", "day", "slot")
    assert_frame_equal(both, alone)
