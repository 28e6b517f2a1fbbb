"""Order validation, pure: plain inputs in, field errors and a normalised profile out. No I/O.

The service adds what needs the database (the site belongs to the sender, the congestion point
exists) and the gate-closure check, which needs the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter

from market.core.amounts import amount_errors
from market.core.errors import FieldError
from market.markets.calendar import MarketClock
from market.orders.schemas import MAX_ISPS_PER_ORDER, FlexOfferCreate, FlexRequestCreate, IspQuantity

MAX_PRICE_MAGNITUDE = Decimal(1_000_000)
_ZERO = Decimal(0)
_START = attrgetter("start")


@dataclass(frozen=True, slots=True)
class Bounds:
    """A market's order bounds and time rules."""

    clock: MarketClock
    min_price_per_mwh: Decimal
    max_price_per_mwh: Decimal
    max_quantity_kw: Decimal


@dataclass(frozen=True, slots=True)
class Profile:
    """A dense ISP profile: ``quantities_kw[i]`` applies to the ISP starting at ``start + i·isp``."""

    start: datetime
    end: datetime
    quantities_kw: list[Decimal]

    def isp_starts(self, isp: timedelta) -> list[datetime]:
        return [self.start + i * isp for i in range(len(self.quantities_kw))]

    def covered_starts(self, isp: timedelta) -> list[datetime]:
        """Starts of the ISPs with a non-zero quantity."""
        return [self.start + i * isp for i, q in enumerate(self.quantities_kw) if q]

    def first_covered(self, isp: timedelta) -> datetime | None:
        """Start of the first ISP with a non-zero quantity, if any."""
        for i, q in enumerate(self.quantities_kw):
            if q:
                return self.start + i * isp
        return None


def profile_errors(field: str, isps: list[IspQuantity], bounds: Bounds) -> tuple[Profile | None, list[FieldError]]:
    """Check units, signs and ISP alignment; build the dense profile.

    Quantities are kW, positive (the direction carries the sign), at most the market's maximum and
    6 decimal places. Starts lie on the market's ISP grid, once each, within a span of
    ``MAX_ISPS_PER_ORDER`` ISPs.
    """
    errors: list[FieldError] = []
    clock = bounds.clock
    max_kw = bounds.max_quantity_kw
    seen: set[datetime] = set()
    for i, item in enumerate(isps):
        start = item.start
        if not clock.is_aligned(start):
            errors.append(
                FieldError(
                    f"{field}[{i}].start", f"not on the market's {clock.isp_minutes}-minute ISP grid ({clock.timezone})"
                )
            )
        if start in seen:
            errors.append(FieldError(f"{field}[{i}].start", "the same ISP appears twice"))
        seen.add(start)
        errors += amount_errors(f"{field}[{i}].quantity_kw", item.quantity_kw, max_abs=max_kw, positive=True)
    if errors:
        return None, errors
    ordered = sorted(isps, key=_START)
    isp = clock.isp
    first = ordered[0].start.astimezone(UTC)
    span = (ordered[-1].start - first) // isp + 1
    if span > MAX_ISPS_PER_ORDER:
        return None, [FieldError(field, f"spans {span} ISPs; at most {MAX_ISPS_PER_ORDER}")]
    quantities = [_ZERO] * span
    for item in ordered:
        quantities[(item.start - first) // isp] = item.quantity_kw
    return Profile(start=first, end=first + span * isp, quantities_kw=quantities), []


def price_errors(field: str, price: Decimal, bounds: Bounds) -> list[FieldError]:
    errors = amount_errors(field, price, max_abs=MAX_PRICE_MAGNITUDE)
    if not errors and not bounds.min_price_per_mwh <= price <= bounds.max_price_per_mwh:
        errors.append(
            FieldError(
                field, f"must lie within the market's bounds [{bounds.min_price_per_mwh}, {bounds.max_price_per_mwh}]"
            )
        )
    return errors


def expiry_errors(expires_at: datetime | None, now: datetime) -> list[FieldError]:
    if expires_at is not None and expires_at <= now:
        return [FieldError("expires_at", "must lie in the future")]
    return []


def validate_request(data: FlexRequestCreate, bounds: Bounds, now: datetime) -> tuple[Profile | None, list[FieldError]]:
    profile, errors = profile_errors("isps", data.isps, bounds)
    errors += price_errors("max_price_per_mwh", data.max_price_per_mwh, bounds)
    errors += expiry_errors(data.expires_at, now)
    return profile, errors


def validate_offer(
    data: FlexOfferCreate, bounds: Bounds, now: datetime
) -> tuple[Profile | None, Profile | None, list[FieldError]]:
    """Returns the offer profile, the rebound profile (or None) and every error found."""
    profile, errors = profile_errors("isps", data.isps, bounds)
    if (data.site_id is None) == (data.portfolio_id is None):
        errors.append(FieldError("site_id", "give exactly one of site_id and portfolio_id"))
    errors += _price_form_errors(data, bounds)
    errors += _fraction_errors(data.min_acceptance_fraction)
    rebound: Profile | None = None
    if data.rebound is not None:
        if not data.block:
            errors.append(FieldError("rebound", "a rebound scales with one activation factor, so it needs block=true"))
        rebound, rebound_errors = profile_errors("rebound", data.rebound, bounds)
        errors += rebound_errors
        if profile is not None and rebound is not None:
            overlap = set(profile.covered_starts(bounds.clock.isp)) & set(rebound.covered_starts(bounds.clock.isp))
            if overlap:
                errors.append(FieldError("rebound", f"overlaps the offered ISPs at {min(overlap).isoformat()}"))
    if data.storage is not None:
        errors += _storage_errors(data)
    errors += expiry_errors(data.expires_at, now)
    return profile, rebound, errors


def _price_form_errors(data: FlexOfferCreate, bounds: Bounds) -> list[FieldError]:
    if (data.price_per_mwh is None) == (data.tranches is None):
        return [FieldError("price_per_mwh", "give exactly one of price_per_mwh and tranches")]
    if data.price_per_mwh is not None:
        return price_errors("price_per_mwh", data.price_per_mwh, bounds)
    assert data.tranches is not None  # noqa: S101 - exactly one form is set, checked above
    errors: list[FieldError] = []
    total = Decimal(0)
    for i, tranche in enumerate(data.tranches):
        share_errors = amount_errors(f"tranches[{i}].share", tranche.share, max_abs=Decimal(1), positive=True)
        errors += share_errors
        if not share_errors:
            total += tranche.share
        errors += price_errors(f"tranches[{i}].price_per_mwh", tranche.price_per_mwh, bounds)
        if (
            i
            and tranche.price_per_mwh.is_finite()
            and data.tranches[i - 1].price_per_mwh.is_finite()
            and tranche.price_per_mwh < data.tranches[i - 1].price_per_mwh
        ):
            errors.append(
                FieldError(
                    f"tranches[{i}].price_per_mwh",
                    "prices must not fall from one tranche to the next (a convex cost curve)",
                )
            )
    if not errors and total != 1:
        errors.append(FieldError("tranches", f"shares must add up to exactly 1, not {total}"))
    return errors


def _fraction_errors(fraction: Decimal) -> list[FieldError]:
    errors = amount_errors("min_acceptance_fraction", fraction, max_abs=Decimal(1))
    if not errors and fraction < 0:
        errors.append(FieldError("min_acceptance_fraction", "must lie between 0 and 1"))
    return errors


def _storage_errors(data: FlexOfferCreate) -> list[FieldError]:
    storage = data.storage
    assert storage is not None  # noqa: S101 - only called with storage
    big = Decimal(10_000_000)
    errors = amount_errors("storage.capacity_kwh", storage.capacity_kwh, max_abs=big, positive=True)
    errors += amount_errors("storage.initial_kwh", storage.initial_kwh, max_abs=big)
    errors += amount_errors("storage.efficiency", storage.efficiency, max_abs=Decimal(1), positive=True)
    if not errors and not 0 <= storage.initial_kwh <= storage.capacity_kwh:
        errors.append(FieldError("storage.initial_kwh", "must lie between 0 and capacity_kwh"))
    return errors


def gate_errors(field: str, profile: Profile, clock: MarketClock, now: datetime) -> list[FieldError]:
    """Refuse an order whose gate has closed (MARKET.md, Time: after gate closure, refuse).

    Gate closure never falls as ISPs get later, so the order's first ISP with a quantity decides.
    """
    first = profile.first_covered(clock.isp)
    if first is None:
        return []
    gate = clock.gate_closure(first)
    if now >= gate:
        return [FieldError(field, f"the gate for the ISP at {first.isoformat()} closed at {gate.isoformat()}")]
    return []
