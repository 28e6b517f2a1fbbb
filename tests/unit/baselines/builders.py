"""Small frames for the baseline tests. 3 March 2025 is a Monday; 8-9 March is a weekend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date

import polars as pl

from settlement.baselines.methods import RESOURCE_DTYPE, SLOT_DTYPE

READING_SCHEMA = {"resource": RESOURCE_DTYPE, "day": pl.Date, "slot": SLOT_DTYPE, "kw": pl.Float64}
OUT_SCHEMA = {"resource": RESOURCE_DTYPE, "day": pl.Date, "slot": SLOT_DTYPE, "baseline_kw": pl.Float64}


def d(day: int, month: int = 3) -> date:
    """A day of 2025."""
    return date(2025, month, day)


def readings(rows: Iterable[tuple[int, date, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=READING_SCHEMA, orient="row")


def profile_days(
    resource: int,
    days: Mapping[date, float | Sequence[float]],
    slots: int = 8,
    *,
    overrides: Mapping[tuple[date, int], float | None] | None = None,
) -> list[tuple[int, date, int, float]]:
    """Rows for ``resource``: a day maps to one kW for every slot 0..slots−1, or to a list of kW per slot.
    ``overrides`` sets single (day, slot) values; None deletes the reading (a gap)."""
    out: dict[tuple[date, int], float | None] = {}
    for day, value in days.items():
        for slot in range(slots):
            out[day, slot] = float(value if isinstance(value, int | float) else value[slot])
    out.update(overrides or {})
    return [(resource, day, slot, kw) for (day, slot), kw in sorted(out.items()) if kw is not None]


def events(*rows: tuple[int, date, int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows),
        schema={"resource": RESOURCE_DTYPE, "day": pl.Date, "first_slot": pl.Int32, "last_slot": pl.Int32},
        orient="row",
    )


def expected(rows: Iterable[tuple[int, date, int, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=OUT_SCHEMA, orient="row")
