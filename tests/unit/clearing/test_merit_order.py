"""The engine against a merit order written here in plain Python.

Scope where a merit order is the whole truth: one congestion point, one direction, divisible
single-price offers (which never link ISPs, so every ISP is its own auction) and at most one
request per ISP. Per ISP: sort the offers by (price, submitted_at, id) and fill the request while
the price is at most its value; an offer priced exactly at the value is taken (most procured kW).

The pay-as-clear price is the midpoint of the interval of optimal duals λ, by cases:

* request not fully met, something procured: the request column is interior → λ = value;
* nothing procured (every offer dearer than the value): λ ∈ [value, cheapest offer];
* request met and the last accepted offer only partly: that offer is interior → λ = its price;
* request met exactly by whole offers: λ ∈ [last accepted price, min(value, next offer's price)].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from market.clearing.book import DOWN, UP, Offer, OrderBook, PricingRule, Request
from market.clearing.engine import clear
from tests.unit.clearing.builders import ISPS, at

HOURS = Decimal("0.25")
KW = Decimal("0.001")
PRICE = Decimal("0.0001")


def dec(value: float) -> Decimal:
    return Decimal(repr(value))


@dataclass
class Expected:
    accepted: dict[str, dict[int, Decimal]] = field(default_factory=dict)
    paid: dict[str, dict[int, Decimal]] = field(default_factory=dict)
    points: dict[int, tuple[Decimal, Decimal, Decimal, Decimal]] = field(default_factory=dict)
    procured: dict[str, Decimal] = field(default_factory=dict)
    rejections: dict[str, str] = field(default_factory=dict)
    welfare: Decimal = Decimal(0)


Entry = tuple[Decimal, str, str, Decimal]
"""(price, submitted_at, offer id, kW offered at this ISP): sorting gives the merit order."""


def fill(entries: list[Entry], wanted: Decimal, value: Decimal) -> tuple[list[tuple[Entry, Decimal]], Decimal]:
    """Fill ``wanted`` kW from the sorted entries while the price is at most ``value``; also λ."""
    remaining = wanted
    taken: list[tuple[Entry, Decimal]] = []
    next_price = None
    for entry in entries:
        if entry[0] > value or remaining == 0:
            next_price = entry[0]
            break
        take = min(entry[3], remaining)
        taken.append((entry, take))
        remaining -= take
    if remaining > 0:  # not fully met: y interior (λ = value), or nothing cheap enough
        return taken, value if taken else (value + entries[0][0]) / 2
    (p_last, _, _, q_last), x_last = taken[-1]
    if x_last < q_last:  # the marginal offer is interior
        return taken, p_last
    high = value if next_price is None else min(value, next_price)
    return taken, (p_last + high) / 2


def merit_order(book: OrderBook) -> Expected:
    """The expected clearing of a single-point, single-direction book of divisible offers."""
    out = Expected()
    reachable: dict[str, list[Decimal]] = {}  # offer id -> λ at each ISP of it with a request
    request_at = {r.first_isp: r for r in book.requests if r.quantities_kw[0] > 0}
    pay_as_clear = book.pricing_rule is PricingRule.PAY_AS_CLEAR
    total = Decimal(0)
    for t in range(len(book.isps)):
        entries = sorted(
            (dec(o.tranches[0][1]), o.submitted_at, o.id, dec(o.quantities_kw[t - o.first_isp]))
            for o in book.offers
            if o.first_isp <= t < o.first_isp + len(o.quantities_kw) and o.quantities_kw[t - o.first_isp] > 0
        )
        req = request_at.get(t)
        if req is None:
            continue  # no auction in this ISP
        wanted, value = dec(req.quantities_kw[0]), dec(req.value_per_mwh)
        if not entries:  # nothing offered: all unmet; the interval [value, ∞) has only its low end
            out.points[t] = (wanted, Decimal(0), wanted, value)
            continue
        taken, lam = fill(entries, wanted, value)
        got = sum((take for _, take in taken), Decimal(0))
        for (p, _, oid, _), take in taken:
            out.accepted.setdefault(oid, {})[t] = take
            out.paid.setdefault(oid, {})[t] = lam if pay_as_clear else p
            total -= p * take
        for _, _, oid, _ in entries:
            reachable.setdefault(oid, []).append(lam)
        out.points[t] = (wanted, got, wanted - got, lam)
        if got > 0:
            out.procured[req.id] = got
        total += value * got
    for o in book.offers:
        if o.id in out.accepted:
            continue
        if o.id not in reachable:
            out.rejections[o.id] = "no_request"
        elif all(dec(o.tranches[0][1]) > lam for lam in reachable[o.id]):
            out.rejections[o.id] = "above_marginal_price"
        else:
            out.rejections[o.id] = "not_needed"
    out.welfare = (total * HOURS / 1000).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return out


# -- random books -----------------------------------------------------------------------------------

prices = st.one_of(
    st.sampled_from([50.0, 80.0, 100.0, 100.01, 120.0]),  # ties with each other and with values
    st.integers(min_value=100, max_value=25_000).map(lambda c: c / 100),
)
quantities = st.one_of(st.sampled_from([2.0, 5.0]), st.integers(min_value=1, max_value=120).map(lambda d: d / 10))


@st.composite
def books(draw: st.DrawFn) -> OrderBook:
    n_isps = draw(st.integers(min_value=1, max_value=3))
    direction = draw(st.sampled_from([UP, DOWN]))
    rule = draw(st.sampled_from(list(PricingRule)))
    offers = []
    for i in range(draw(st.integers(min_value=0, max_value=8))):
        first = draw(st.integers(min_value=0, max_value=n_isps - 1))
        length = draw(st.integers(min_value=1, max_value=n_isps - first))
        kws = tuple(draw(st.one_of(quantities, st.just(0.0))) for _ in range(length))
        offers.append(
            Offer(
                id=f"o{i}",
                congestion_point="F1",
                direction=direction,
                first_isp=first,
                quantities_kw=kws,
                tranches=((1.0, draw(prices)),),
                submitted_at=at(draw(st.integers(min_value=0, max_value=3))),
            )
        )
    requests = [
        Request(f"r{t}", "F1", direction, t, (draw(quantities),), draw(prices), at(0))
        for t in range(n_isps)
        if draw(st.booleans()) or t == 0
    ]
    return OrderBook(ISPS[:n_isps], 0.25, tuple(offers), tuple(requests), {("F1", "F1"): 1.0}, rule)


def _accepted(result) -> dict[str, dict[int, Decimal]]:
    return {a.offer_id: {a.first_isp + j: kw for j, kw in enumerate(a.accepted_kw) if kw != 0} for a in result.awards}


def _paid(result) -> dict[str, dict[int, Decimal]]:
    return {
        a.offer_id: {
            a.first_isp + j: p for j, (kw, p) in enumerate(zip(a.accepted_kw, a.price_per_mwh, strict=True)) if kw != 0
        }
        for a in result.awards
    }


def _quantized(values: dict[str, dict[int, Decimal]], step: Decimal) -> dict[str, dict[int, Decimal]]:
    return {k: {t: v.quantize(step) for t, v in per.items()} for k, per in values.items()}


def check(book: OrderBook, solver: str = "HIGHS") -> None:
    result = clear(book, solver)
    expected = merit_order(book)
    assert _accepted(result) == _quantized(expected.accepted, KW)
    assert {r.request_id: sum(r.procured_kw) for r in result.request_awards} == expected.procured
    assert {p.isp: (p.requested_kw, p.procured_kw, p.unmet_kw) for p in result.points} == {
        t: v[:3] for t, v in expected.points.items()
    }
    assert {p.isp: p.price_per_mwh for p in result.points} == {
        t: v[3].quantize(PRICE) for t, v in expected.points.items()
    }
    assert _paid(result) == _quantized(expected.paid, PRICE)
    assert {r.offer_id: r.reason.value for r in result.rejections} == expected.rejections
    assert result.welfare == expected.welfare


def _book(offers: list[tuple[str, float, float, int]], request: tuple[float, float], rule=PricingRule.PAY_AS_CLEAR):
    return OrderBook(
        ISPS[:1],
        0.25,
        tuple(Offer(i, "F1", UP, 0, (q,), ((1.0, p),), at(s)) for i, q, p, s in offers),
        (Request("r0", "F1", UP, 0, (request[0],), request[1], at(0)),),
        {("F1", "F1"): 1.0},
        rule,
    )


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books())
@example(_book([("a", 5.0, 50.0, 0), ("b", 3.0, 80.0, 0), ("c", 5.0, 200.0, 0)], (8.0, 150.0)))
@example(_book([("a", 5.0, 80.0, 2), ("b", 5.0, 80.0, 1)], (6.0, 150.0), PricingRule.PAY_AS_BID))
@example(_book([("a", 5.0, 120.0, 0), ("b", 5.0, 130.0, 0)], (6.0, 100.0)))
@example(_book([("a", 10.0, 80.0, 0)], (5.0, 80.0)))
def test_engine_matches_merit_order(book):
    check(book)


def test_offers_a_cent_above_the_value():
    # Two offers 2@100.01 for 2 kW @100: nothing procured; λ ∈ [100, 100.01] → 100.005.
    check(_book([("a", 2.0, 100.01, 0), ("b", 2.0, 100.01, 0)], (2.0, 100.0)))


def test_five_identical_offers():
    # Five offers 2@50 (same time: id order), 2 kW @80: o0 gets 2; λ ∈ [50, min(80, 50)] = 50;
    # o1-o4 are as cheap as the price: not needed.
    check(_book([(f"o{i}", 2.0, 50.0, 0) for i in range(5)], (2.0, 80.0)))


def test_merit_order_reference_on_a_hand_example():
    # The reference itself, on the MARKET.md example: 5@50 and 3 of 5@80 for 8 kW @150; λ = 80.
    expected = merit_order(_book([("o1", 5.0, 50.0, 1), ("o2", 5.0, 80.0, 2), ("o3", 5.0, 200.0, 3)], (8.0, 150.0)))
    assert expected.accepted == {"o1": {0: Decimal(5)}, "o2": {0: Decimal(3)}}
    assert expected.points == {0: (Decimal(8), Decimal(8), Decimal(0), Decimal(80))}
    assert expected.rejections == {"o3": "above_marginal_price"}
    assert expected.welfare == Decimal("0.18")
