"""Every method on frames small enough to check by hand.

The week (resource 0; 3 March 2025 is a Monday), slots 0..7, kW per slot:

    Mon 10: 100 everywhere
    Tue 11: 6 everywhere except slot 4 = 8, slot 5 = 4     (event-window mean 6)
    Wed 12: 10 everywhere except slot 4 = 9, slot 5 = 11   (mean 10)
    Thu 13: 5 everywhere                                   (mean 5)
    Sat 8: 40, Sun 9: 20
    Fri 14: the event day, window slots 4..5; 8 everywhere unless a test sets the adjustment slots 1, 2.

With y = 3 the weekday like-days of Fri 14 are Thu 13, Wed 12, Tue 11 (Mon 10 is the 4th most recent).
The adjustment window with window = 2, gap = 1 is slots [4 − 1 − 2, 4 − 1 − 1] = [1, 2].
"""

from __future__ import annotations

import math
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from market.core.errors import FieldError, InvalidInput
from settlement.baselines.methods import (
    REGISTRY,
    BaselineMethod,
    BaselineParams,
    baseline_accuracy,
    compute_baselines,
    validate_params,
)
from tests.unit.baselines.builders import d, events, expected, profile_days, readings

HIGH, MIDDLE, AVERAGE = BaselineMethod.HIGH_X_OF_Y, BaselineMethod.MIDDLE_X_OF_Y, BaselineMethod.Y_DAY_AVERAGE
METER, NOMINATED = BaselineMethod.METER_BEFORE_AFTER, BaselineMethod.NOMINATED
FRI = d(14)
EVENT = events((0, FRI, 4, 5))
NO_ADJUST = BaselineParams(x=2, y=3, adjust=False)
ADJUST = BaselineParams(x=2, y=3, adjust=True, adjustment_window=2, adjustment_gap=1, adjustment_cap=0.2)


def week(
    *, event_day: dict[int, float] | None = None, overrides: dict[tuple[date, int], float | None] | None = None
) -> pl.DataFrame:
    tue = [6, 6, 6, 6, 8, 4, 6, 6]
    wed = [10, 10, 10, 10, 9, 11, 10, 10]
    fri = [8.0] * 8
    for slot, kw in (event_day or {}).items():
        fri[slot] = kw
    days = {d(8): 40, d(9): 20, d(10): 100, d(11): tue, d(12): wed, d(13): 5, d(14): fri}
    return readings(profile_days(0, days, overrides=overrides))


def window(slot4: float | None, slot5: float | None, day: date = FRI) -> pl.DataFrame:
    return expected([(0, day, 4, slot4), (0, day, 5, slot5)])


# -- like-day selection ---------------------------------------------------------------------------------------------


def test_high_x_of_y_takes_the_x_highest_of_the_y_most_recent_like_days() -> None:
    # Means 5 (13th), 10 (12th), 6 (11th): the 2 highest are the 12th and 11th: (9 + 8)/2, (11 + 4)/2.
    out = compute_baselines(HIGH, NO_ADJUST, week(), EVENT)
    assert_frame_equal(out, window(8.5, 7.5))


def test_middle_x_of_y_drops_as_many_high_as_low_days() -> None:
    # Ranked 10 (12th), 6 (11th), 5 (13th); middle 1 of 3 is the 11th.
    out = compute_baselines(MIDDLE, BaselineParams(x=1, y=3, adjust=False), week(), EVENT)
    assert_frame_equal(out, window(8.0, 4.0))


def test_y_day_average_averages_the_y_most_recent_like_days() -> None:
    out = compute_baselines(AVERAGE, BaselineParams(y=3, adjust=False), week(), EVENT)
    assert_frame_equal(out, window((5 + 9 + 8) / 3, (5 + 11 + 4) / 3))


def test_ties_in_the_window_mean_go_to_the_more_recent_day() -> None:
    # Thu 13 and Tue 11 both average 6 in the window; high 2 of 3 takes Wed 12 and the more recent Thu 13.
    overrides = {(d(13), 4): 7.0, (d(13), 5): 5.0}
    out = compute_baselines(HIGH, NO_ADJUST, week(overrides=overrides), EVENT)
    assert_frame_equal(out, window((9 + 7) / 2, (11 + 5) / 2))


# -- same-day adjustment --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "change"),
    [
        (9.0, 1.0),  # a − b = 9 − 8 = +1, within the cap 0.2 × 8 = 1.6
        (7.5, -0.5),  # within the cap, downwards
        (12.0, 1.6),  # +4 capped at +1.6
        (2.0, -1.6),  # −6 capped at −1.6
    ],
)
def test_additive_adjustment_is_capped_symmetrically(actual: float, change: float) -> None:
    # The chosen days (12th, 11th) average (10 + 6)/2 = 8 over the adjustment slots 1, 2.
    out = compute_baselines(HIGH, ADJUST, week(event_day={1: actual, 2: actual}), EVENT)
    assert_frame_equal(out, window(8.5 + change, 7.5 + change))


@pytest.mark.parametrize(
    ("actual", "ratio"),
    [
        (7.7, 1.1),  # 7.7 / 7 within [0.8, 1.2]
        (14.0, 1.2),  # 2.0 capped at 1.2
        (3.5, 0.8),  # 0.5 capped at 0.8
    ],
)
def test_multiplicative_adjustment_is_capped_to_plus_minus_20_percent(actual: float, ratio: float) -> None:
    # The 3 days average (5 + 10 + 6)/3 = 7 over slots 1, 2.
    params = BaselineParams(y=3, adjust=True, adjustment_window=2, adjustment_gap=1, adjustment_cap=0.2)
    out = compute_baselines(AVERAGE, params, week(event_day={1: actual, 2: actual}), EVENT)
    assert_frame_equal(out, window(22 / 3 * ratio, 20 / 3 * ratio))


def test_adjustment_uses_the_window_readings_present_on_the_event_day() -> None:
    # Slot 1 missing on the event day: a = 9 (slot 2), b = 8 (slot 2) → +1.
    out = compute_baselines(HIGH, ADJUST, week(event_day={2: 9.0}, overrides={(d(14), 1): None}), EVENT)
    assert_frame_equal(out, window(9.5, 8.5))
    # No reading in the window at all: null.
    gaps = {(d(14), 1): None, (d(14), 2): None}
    out = compute_baselines(HIGH, ADJUST, week(overrides=gaps), EVENT)
    assert_frame_equal(out, window(None, None))


def test_adjustment_window_before_midnight_means_no_adjustment() -> None:
    # Event at slots 0..1: the window [−3, −2] is empty after clipping at 0, so the baseline is unadjusted:
    # the 12th (10, 10) and 11th (6, 6) → 8, 8 (the 13th has 5).
    out = compute_baselines(HIGH, ADJUST, week(event_day={0: 50.0}), events((0, d(14), 0, 1)))
    assert_frame_equal(out, expected([(0, d(14), 0, 8.0), (0, d(14), 1, 8.0)]))


# -- day types, event days, missing data ----------------------------------------------------------------------------


def test_holiday_on_a_weekday_leaves_weekday_history() -> None:
    # Wed 12 is a holiday: weekday like-days are 13, 11, 10; high 2: 10th (100) and 11th (8, 4).
    out = compute_baselines(HIGH, NO_ADJUST, week(), EVENT, holidays=frozenset({d(12)}))
    assert_frame_equal(out, window(54.0, 52.0))


def test_weekend_event_uses_weekend_and_holiday_like_days() -> None:
    saturday = events((0, d(15), 4, 5))
    params = BaselineParams(x=3, y=3, weekend_x=2, weekend_y=2, adjust=False)
    rows = week().vstack(readings(profile_days(0, {d(15): 1.0})))
    # No holiday: Sun 9 (20) and Sat 8 (40).
    assert_frame_equal(compute_baselines(HIGH, params, rows, saturday), window(30.0, 30.0, d(15)))
    # Wed 12 a holiday: it is the most recent weekend-like day: Wed 12 (9, 11) and Sun 9 (20).
    out = compute_baselines(HIGH, params, rows, saturday, holidays=frozenset({d(12)}))
    assert_frame_equal(out, window(14.5, 15.5, d(15)))


def test_event_days_are_not_like_days() -> None:
    both = events((0, d(14), 4, 5), (0, d(12), 4, 5))
    out = compute_baselines(HIGH, NO_ADJUST, week(), both)
    # 14th: 13, 11, 10 → 54, 52. 12th: only 11 and 10 before it (Fri 7 has no data): fewer than y → null.
    assert_frame_equal(out, window(None, None, d(12)).vstack(window(54.0, 52.0)))
    excluded = pl.DataFrame({"resource": [0], "day": [d(12)]})
    out = compute_baselines(HIGH, NO_ADJUST, week(), EVENT, excluded_days=excluded)
    assert_frame_equal(out, window(54.0, 52.0))


def test_a_gap_in_the_event_window_makes_the_day_ineligible() -> None:
    out = compute_baselines(HIGH, NO_ADJUST, week(overrides={(d(12), 5): None}), EVENT)
    assert_frame_equal(out, window(54.0, 52.0))


def test_a_gap_in_the_adjustment_window_matters_only_when_adjusting() -> None:
    gap = {(d(12), 1): None}
    assert_frame_equal(compute_baselines(HIGH, NO_ADJUST, week(overrides=gap), EVENT), window(8.5, 7.5))
    # Adjusting: like-days 13, 11, 10 → 10th and 11th: (54, 52), and (100 + 6)/2 = 53 over slots 1, 2;
    # a = 9: 9 − 53 = −44, capped at −0.2 × 53 = −10.6.
    out = compute_baselines(HIGH, ADJUST, week(event_day={1: 9.0, 2: 9.0}, overrides=gap), EVENT)
    assert_frame_equal(out, window(54 - 10.6, 52 - 10.6))


def test_too_few_eligible_days_in_the_lookback_gives_null() -> None:
    short = BaselineParams(x=2, y=3, adjust=False, max_lookback_days=3)  # days 11..13
    assert_frame_equal(compute_baselines(HIGH, short, week(), EVENT), window(8.5, 7.5))
    out = compute_baselines(HIGH, short, week(overrides={(d(12), 4): None}), EVENT)
    assert_frame_equal(out, window(None, None))


def test_a_resource_without_readings_gets_null() -> None:
    out = compute_baselines(HIGH, NO_ADJUST, week(), events((0, d(14), 4, 5), (7, d(14), 4, 4)))
    assert_frame_equal(out, window(8.5, 7.5).vstack(expected([(7, d(14), 4, None)])))


# -- clock changes --------------------------------------------------------------------------------------------------


def test_clock_forward_day_lacks_the_skipped_hour() -> None:
    # Sun 30 March 2025 has 92 ISPs: no readings at slots 8..11 (02:00-03:00). Event Sat 5 April, 1 of 1 weekend.
    days = {d(29): 3.0, d(30): 7.0, **{d(day): 100.0 for day in (31,)}, d(5, 4): 1.0}
    days.update({d(day, 4): 100.0 for day in range(1, 5)})
    skipped = {(d(30), slot): None for slot in range(8, 12)}
    rows = readings(profile_days(0, days, slots=96, overrides=skipped))
    params = BaselineParams(x=1, y=1, adjust=False)
    # A window in the skipped hour cannot use the 30th: the 29th is the like-day.
    out = compute_baselines(HIGH, params, rows, events((0, d(5, 4), 8, 9)))
    assert_frame_equal(out, expected([(0, d(5, 4), 8, 3.0), (0, d(5, 4), 9, 3.0)]))
    # Outside it the 30th is complete there and is the most recent.
    out = compute_baselines(HIGH, params, rows, events((0, d(5, 4), 12, 13)))
    assert_frame_equal(out, expected([(0, d(5, 4), 12, 7.0), (0, d(5, 4), 13, 7.0)]))


def test_clock_back_day_has_one_folded_reading_per_slot() -> None:
    # Sun 26 October 2025 has 100 ISPs; the repeated hour's two ISPs (5 and 7 kW) are folded by the caller into
    # one reading per local slot, their mean 6. The baseline of slots 8..11 applies to both ISPs of each.
    sunday = d(26, 10)
    rows = readings(profile_days(0, {d(25, 10): 4.0, sunday: 6.0}, slots=96))
    params = BaselineParams(x=1, y=1, adjust=False)
    out = compute_baselines(HIGH, params, rows, events((0, sunday, 8, 11)), with_actual=True)
    want = expected([(0, sunday, slot, 4.0) for slot in range(8, 12)]).with_columns(actual_kw=pl.lit(6.0))
    assert_frame_equal(out, want)
    unfolded = rows.vstack(readings([(0, sunday, 8, 7.0)]))
    with pytest.raises(InvalidInput, match="more than one reading"):
        compute_baselines(HIGH, params, unfolded, events((0, sunday, 8, 11)))


# -- same-day methods -----------------------------------------------------------------------------------------------


def test_meter_before_is_the_mean_of_the_slots_just_before() -> None:
    rows = week(event_day={2: 6.0, 3: 8.0, 6: 13.0})
    out = compute_baselines(METER, BaselineParams(before_slots=2), rows, EVENT)
    assert_frame_equal(out, window(7.0, 7.0))


def test_meter_before_after_interpolates_between_the_window_centres() -> None:
    rows = week(event_day={2: 6.0, 3: 8.0, 6: 13.0})
    # One slot each: the line from (3, 8) to (6, 13): 8 + 5/3, 8 + 10/3.
    one = BaselineParams(before_slots=1, after_slots=1, use_after=True)
    assert_frame_equal(compute_baselines(METER, one, rows, EVENT), window(8 + 5 / 3, 8 + 10 / 3))
    # Two before (mean 7, centre 2.5), one after (13 at 6): 7 + 6·(4 − 2.5)/3.5 and 7 + 6·(5 − 2.5)/3.5.
    two = BaselineParams(before_slots=2, after_slots=1, use_after=True)
    assert_frame_equal(compute_baselines(METER, two, rows, EVENT), window(7 + 6 * 1.5 / 3.5, 7 + 6 * 2.5 / 3.5))


def test_meter_before_without_readings_is_null() -> None:
    rows = week(overrides={(d(14), 2): None, (d(14), 3): None})
    assert_frame_equal(compute_baselines(METER, BaselineParams(before_slots=2), rows, EVENT), window(None, None))


def test_nominated_is_the_nomination_where_there_is_one() -> None:
    nominations = pl.DataFrame({"resource": [0, 0], "day": [d(14), d(13)], "slot": [4, 5], "kw": [3.5, 9.0]})
    out = compute_baselines(NOMINATED, BaselineParams(), week(), EVENT, nominations=nominations, with_actual=True)
    assert_frame_equal(out, window(3.5, None).with_columns(actual_kw=pl.lit(8.0)))


# -- parameters, registry, inputs -----------------------------------------------------------------------------------


def test_defaults_are_valid_and_scale_with_the_isp() -> None:
    for method in BaselineMethod:
        assert validate_params(method, BaselineParams.defaults(method)) == []
    high = BaselineParams.defaults(HIGH)
    assert (high.x, high.y, high.x_weekend, high.y_weekend, high.adjustment_cap) == (4, 5, 2, 3, 0.2)
    assert (high.adjustment_window, high.adjustment_gap) == (12, 4)
    assert BaselineParams.defaults(HIGH, isp_minutes=30).adjustment_window == 6
    assert not BaselineParams.defaults(MIDDLE).adjust


def test_bad_params_name_their_field() -> None:
    assert validate_params(HIGH, BaselineParams(x=6, y=5)) == [
        FieldError("x", "must not exceed y (6 > 5)"),
        FieldError("weekend_x", "must not exceed weekend_y (6 > 5)"),
    ]
    assert [e.field for e in validate_params(HIGH, BaselineParams(adjustment_cap=-0.1))] == ["adjustment_cap"]
    # NaN passes every comparison, and the JSON columns store it as null: refused by name.
    for cap in (math.nan, math.inf):
        assert validate_params(AVERAGE, BaselineParams(adjustment_cap=cap)) == [
            FieldError("adjustment_cap", "must be a finite number")
        ]
    assert [e.field for e in validate_params(MIDDLE, BaselineParams(x=7, y=10, weekend_x=8))] == ["x"]
    assert [e.field for e in validate_params(METER, BaselineParams(before_slots=0))] == ["before_slots"]
    assert [e.field for e in validate_params(AVERAGE, BaselineParams(y=10, max_lookback_days=5))] == [
        "max_lookback_days"
    ]
    with pytest.raises(InvalidInput) as caught:
        compute_baselines(HIGH, BaselineParams(x=6, y=5), week(), EVENT)
    assert caught.value.errors[0].field == "x"


def test_bad_event_windows_are_refused() -> None:
    with pytest.raises(InvalidInput, match="first_slot"):
        compute_baselines(HIGH, NO_ADJUST, week(), events((0, d(14), 5, 4)))
    with pytest.raises(InvalidInput, match="one event window"):
        compute_baselines(HIGH, NO_ADJUST, week(), events((0, d(14), 4, 5), (0, d(14), 6, 6)))


def test_registry_has_a_version_and_a_formula_for_every_method() -> None:
    assert set(REGISTRY) == set(BaselineMethod)
    for method, spec in REGISTRY.items():
        assert spec.method is method
        assert spec.version >= 1
        assert "version" in spec.doc


def test_a_lazy_source_gives_the_same_result() -> None:
    assert_frame_equal(
        compute_baselines(HIGH, ADJUST, week().lazy(), EVENT), compute_baselines(HIGH, ADJUST, week(), EVENT)
    )


# -- accuracy -------------------------------------------------------------------------------------------------------


def test_accuracy_is_rrmse_over_the_non_event_days() -> None:
    # One slot a day, Mon 3..Fri 7: 10, 20, 10, 20, 10; average of the 2 previous weekdays.
    # Wed: 15 vs 10, Thu: 15 vs 20, Fri: 15 vs 10 → RMSE 5, mean actual 40/3 → RRMSE 0.375 (Mon, Tue: no history).
    rows = readings(profile_days(0, {d(3): 10, d(4): 20, d(5): 10, d(6): 20, d(7): 10}, slots=1))
    params = BaselineParams(y=2, adjust=False)
    out = baseline_accuracy(AVERAGE, params, rows)
    assert_frame_equal(out, pl.DataFrame({"resource": [0], "days": [3], "rrmse": [0.375]}, schema_overrides={
        "resource": pl.UInt32, "days": pl.UInt32}))  # fmt: skip
    # Thu is a real event day: not tested, and not history for Fri (Wed, Tue → 15 vs 10).
    # Wed: 15 vs 10 → errors 5, 5; mean actual 10 → 0.5.
    out = baseline_accuracy(AVERAGE, params, rows, event_days=pl.DataFrame({"resource": [0], "day": [d(6)]}))
    assert out.rows() == [(0, 2, 0.5)]
