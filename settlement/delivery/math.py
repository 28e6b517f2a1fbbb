"""Delivery math (pure): delivered kW per ISP, portfolio sums, unit conversion.

MARKET.md: delivered = direction sign × (baseline − actual) per ISP, in kW, where ``up`` means less consumption
(sign +1) and ``down`` more consumption (sign −1). Power is net consumption (import − export), as in the baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final, TypeVar

import polars as pl

from market.core.errors import InvalidInput
from market.orders.models import Direction

MINUTES_PER_HOUR: Final = 60
SIGN: Final = {Direction.UP.value: 1.0, Direction.DOWN.value: -1.0}
"""Direction → sign of (baseline − actual)."""

Energy = TypeVar("Energy", float, Decimal, pl.Expr, pl.Series)


def kwh_to_kw(kwh: Energy, isp_minutes: int) -> Energy:
    """Average power over an ISP from its energy: kW = kWh × 60 / isp_minutes (15-minute ISPs: × 4)."""
    if isp_minutes <= 0:
        raise InvalidInput.on("isp_minutes", "must be positive")
    return kwh * MINUTES_PER_HOUR / isp_minutes


def direction_sign(direction: pl.Expr) -> pl.Expr:
    """+1.0 for ``up``, −1.0 for ``down``, null otherwise."""
    return direction.cast(pl.String).replace_strict(SIGN, default=None, return_dtype=pl.Float64)


def add_delivered(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (… ``direction``, ``baseline_kw``, ``actual_kw``) plus ``delivered_kw`` = sign × (baseline − actual).

    Null where the baseline or the actual is null (delivery cannot be verified there; the caller decides what that
    means for payment). Raises :class:`InvalidInput` for a direction other than up/down.
    """
    sign = direction_sign(pl.col("direction"))
    if rows.select((sign.is_null() & pl.col("direction").is_not_null()).any()).item():
        raise InvalidInput.on("direction", f"must be one of {sorted(SIGN)}")
    return rows.with_columns(delivered_kw=sign * (pl.col("baseline_kw") - pl.col("actual_kw")))


def _complete_sum(name: str) -> pl.Expr:
    """Σ over the members, null if any member's value is null (a missing member never shrinks a total silently)."""
    return pl.when(pl.col(name).null_count() == 0).then(pl.col(name).sum()).alias(name)


def portfolio_delivery(
    site_rows: pl.DataFrame,
    membership: pl.DataFrame,
    *,
    by: Sequence[str] = ("day", "slot", "direction"),
) -> pl.DataFrame:
    """An aggregator's delivery = Σ over its member sites, per portfolio and ``by`` (USEF: the aggregator is settled
    on its portfolio).

    ``site_rows``: ``resource`` (the site), the ``by`` columns, ``baseline_kw``, ``actual_kw``, ``delivered_kw``
    (see :func:`add_delivered`). ``membership``: ``resource``, ``portfolio``. Returns ``portfolio``, ``by``…,
    ``baseline_kw``, ``actual_kw``, ``delivered_kw`` (each Σ over members, null if any member's is null) and
    ``members`` (sites summed). Sites without a portfolio are left out. Since delivered is linear,
    Σ delivered = sign × (Σ baseline − Σ actual).
    """
    keys = ["portfolio", *by]
    return (
        site_rows.join(membership.select("resource", "portfolio"), on="resource", how="inner")
        .group_by(keys)
        .agg(
            _complete_sum("baseline_kw"),
            _complete_sum("actual_kw"),
            _complete_sum("delivered_kw"),
            pl.len().cast(pl.UInt32).alias("members"),
        )
        .sort(keys)
    )
