"""Properties of any clearing, on random books over a small radial tree.

Books: root T with 2-3 feeders, 2-3 ISPs, both directions, both pricing rules, two-tranche offers,
a few block offers (some with a rebound), storage offers (their state of charge links their ISPs),
and, in the second family, all-or-nothing offers. Every request gets at least one offer at its own
point, ISP and direction; one point may have an up and a down request at once.

The payment property follows from LP duality: an accepted divisible offer's reduced cost is ≥ 0,
so the locational value it earns is at least its marginal tranche's price. It does not hold per
ISP for a block offer (only its whole profile must pay) nor for an all-or-nothing offer (its price
comes from the LP with the binaries fixed, where the relief row can be slack), so blocks are
checked over their profile and all-or-nothing offers are not checked.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from unittest import mock

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from market.clearing.book import DOWN, UP, ClearingResult, Offer, OrderBook, PricingRule, Request, Storage
from market.clearing.engine import clear
from tests.unit.clearing.builders import ISPS, RADIAL, RADIAL3, at, summary

TOL = Decimal("0.0001")
HALF_WATT = Decimal("0.0005")
PROPERTY_SETTINGS = settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

prices = st.one_of(
    st.sampled_from([40.0, 80.0, 100.0]),
    st.integers(min_value=500, max_value=20_000).map(lambda c: c / 100),
)
quantities = st.integers(min_value=5, max_value=100).map(lambda d: d / 10)


@st.composite
def tranches(draw: st.DrawFn) -> tuple[tuple[float, float], ...]:
    first = draw(prices)
    if draw(st.integers(min_value=0, max_value=3)) > 0:
        return ((1.0, first),)
    share = draw(st.sampled_from([0.25, 0.5, 0.75]))
    step = draw(st.integers(min_value=0, max_value=5000).map(lambda c: c / 100))
    return ((share, first), (1.0 - share, first + step))


@st.composite
def random_books(draw: st.DrawFn, *, all_or_nothing: bool) -> OrderBook:
    n_feeders = draw(st.integers(min_value=2, max_value=3))
    relief = RADIAL3 if n_feeders == 3 else RADIAL
    points = ["T", *[f"F{i + 1}" for i in range(n_feeders)]]
    n_isps = draw(st.integers(min_value=2, max_value=3))
    rule = draw(st.sampled_from(list(PricingRule)))
    directions = st.sampled_from([UP, DOWN])

    requests: list[Request] = []
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        isp = draw(st.integers(min_value=0, max_value=n_isps - 1))
        length = draw(st.integers(min_value=1, max_value=n_isps - isp))
        point = draw(st.sampled_from(points))
        requests.append(
            Request(
                f"r{i}",
                point,
                draw(directions),
                isp,
                tuple(draw(quantities) for _ in range(length)),
                draw(prices),
                at(draw(st.integers(min_value=0, max_value=9))),
            )
        )

    offers: list[Offer] = []

    def add(point: str, direction: int, isp: int, kws: tuple[float, ...], **extra: object) -> None:
        offers.append(
            Offer(
                id=f"o{len(offers)}",
                congestion_point=point,
                direction=direction,
                first_isp=isp,
                quantities_kw=kws,
                tranches=draw(tranches()),
                submitted_at=at(draw(st.integers(min_value=0, max_value=9))),
                **extra,  # type: ignore[arg-type]
            )
        )

    # One divisible offer where each request is, so every relief row can be relieved.
    for r in requests:
        add(r.congestion_point, r.direction, r.first_isp, tuple(draw(quantities) for _ in r.quantities_kw))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        isp = draw(st.integers(min_value=0, max_value=n_isps - 1))
        length = draw(st.integers(min_value=1, max_value=n_isps - isp))
        kind = draw(st.sampled_from(["divisible", "storage", "block", "aon" if all_or_nothing else "divisible"]))
        extra: dict[str, object] = {}
        if kind == "storage":
            capacity = draw(st.sampled_from([0.5, 1.0, 2.0, 5.0]))
            share = draw(st.sampled_from([0.0, 0.5, 1.0]))
            extra["storage"] = Storage(capacity, capacity * share, draw(st.sampled_from([1.0, 0.9])))
        if kind == "block":
            extra["block"] = True
            if isp + length < n_isps and draw(st.booleans()):
                extra["rebound_first_isp"] = isp + length
                extra["rebound_kw"] = (draw(quantities),)
        elif kind == "aon":
            extra["min_fraction"] = draw(st.sampled_from([1.0, 0.5]))
            extra["block"] = draw(st.booleans())
        add(
            draw(st.sampled_from(points)),
            draw(directions),
            isp,
            tuple(draw(quantities) for _ in range(length)),
            **extra,
        )
    return OrderBook(ISPS[:n_isps], 0.25, tuple(offers), tuple(requests), dict(relief), rule)


# -- the properties -------------------------------------------------------------------------------


def check_welfare_not_negative(result: ClearingResult) -> None:
    assert result.welfare >= 0


def check_awards_within_bounds(book: OrderBook, result: ClearingResult) -> None:
    by_id = {o.id: o for o in book.offers}
    for award in result.awards:
        offer = by_id[award.offer_id]
        assert award.first_isp == offer.first_isp
        assert len(award.accepted_kw) == len(offer.quantities_kw)
        offered = [Decimal(repr(q)) for q in offer.quantities_kw]
        for got, q in zip(award.accepted_kw, offered, strict=True):
            assert 0 <= got <= q
        if offer.min_fraction > 0:
            share = sum(award.accepted_kw) / sum(offered)
            assert share >= Decimal(repr(offer.min_fraction)) - TOL
            if offer.min_fraction == 1:
                assert award.accepted_kw == tuple(q.quantize(Decimal("0.001")) for q in offered)
        if offer.block:
            assert award.activation is not None
            for got, q in zip(award.accepted_kw, offered, strict=True):
                assert abs(got - award.activation * q) <= Decimal("0.002") * q


def check_paid_at_least_lowest_tranche(book: OrderBook, result: ClearingResult) -> None:
    if book.pricing_rule is not PricingRule.PAY_AS_CLEAR:
        return
    by_id = {o.id: o for o in book.offers}
    for award in result.awards:
        offer = by_id[award.offer_id]
        lowest = Decimal(repr(offer.tranches[0][1]))
        if offer.min_fraction > 0:
            continue  # priced by the LP with the binaries fixed: no guarantee (module docstring)
        if offer.block:
            if offer.rebound_kw:
                continue  # the rebound's cost at other ISPs is in the activation's reduced cost
            total = sum(award.accepted_kw)
            earned = sum(k * p for k, p in zip(award.accepted_kw, award.price_per_mwh, strict=True))
            # A block between its bounds breaks even exactly; its kW are published to the watt, so
            # each ISP's kW may be off by half a watt on both sides of the inequality.
            rounding = sum((HALF_WATT * (p + lowest) for p in award.price_per_mwh), Decimal(0))
            assert earned >= lowest * total - TOL * total - rounding
            continue
        for got, paid in zip(award.accepted_kw, award.price_per_mwh, strict=True):
            if got > 0:
                assert paid >= lowest - TOL, (award.offer_id, paid, lowest)


def check_nothing_procured_above_value(book: OrderBook, result: ClearingResult) -> None:
    values: dict[tuple[str, int, int], list[Decimal]] = {}
    for r in book.requests:
        for j, q in enumerate(r.quantities_kw):
            if q > 0:
                values.setdefault((r.congestion_point, r.first_isp + j, r.direction), []).append(
                    Decimal(repr(r.value_per_mwh))
                )
    for p in result.points:
        assert p.procured_kw <= p.requested_kw
        assert p.unmet_kw == p.requested_kw - p.procured_kw
        if p.procured_kw > 0:
            # A procured kW has reduced cost ≥ 0: λ ≤ its request's value. (With nothing procured λ
            # may exceed every value: any λ ≥ value keeps the request at 0.)
            assert p.price_per_mwh <= max(values[(p.congestion_point, p.isp, p.direction)]) + TOL
    price_at = {(p.congestion_point, p.isp, p.direction): p.price_per_mwh for p in result.points}
    by_id = {r.id: r for r in book.requests}
    for award in result.request_awards:
        r = by_id[award.request_id]
        for j, got in enumerate(award.procured_kw):
            assert 0 <= got <= Decimal(repr(r.quantities_kw[j]))
            if got > 0:
                assert (
                    price_at[(r.congestion_point, r.first_isp + j, r.direction)] <= Decimal(repr(r.value_per_mwh)) + TOL
                )


def check_welfare_is_what_the_awards_say(book: OrderBook, result: ClearingResult) -> None:
    """Welfare recomputed from the published awards in Decimal, tranche by tranche: the engine sums
    single-price offers as integers, which must give exactly this."""
    total = Decimal(0)
    requests = {r.id: r for r in book.requests}
    for award in result.request_awards:
        total += Decimal(repr(requests[award.request_id].value_per_mwh)) * sum(award.procured_kw, Decimal(0))
    offers = {o.id: o for o in book.offers}
    for award in result.awards:
        offer = offers[award.offer_id]
        for j, kw in enumerate(award.accepted_kw):
            remaining = kw
            for share, price in offer.tranches:
                take = min(remaining, Decimal(repr(share)) * Decimal(repr(offer.quantities_kw[j])))
                total -= take * Decimal(repr(price))
                remaining -= take
    expected = (total * Decimal(repr(book.isp_hours)) / 1000).quantize(Decimal("0.01"))
    assert result.welfare == expected


def check_result_hash_is_the_documented_json(result: ClearingResult) -> None:
    """The engine writes the hashed JSON's big arrays by hand; it must be exactly json.dumps's."""
    document = {
        "awards": [
            [
                a.offer_id,
                a.first_isp,
                [str(v) for v in a.accepted_kw],
                [str(v) for v in a.price_per_mwh],
                None if a.activation is None else str(a.activation),
            ]
            for a in result.awards
        ],
        "rejections": [[r.offer_id, r.reason.value] for r in result.rejections],
        "points": [
            [
                p.congestion_point,
                p.isp,
                p.direction,
                str(p.requested_kw),
                str(p.procured_kw),
                str(p.unmet_kw),
                str(p.price_per_mwh),
            ]
            for p in result.points
        ],
        "requests": [[r.request_id, r.first_isp, [str(v) for v in r.procured_kw]] for r in result.request_awards],
        "welfare": str(result.welfare),
    }
    expected = hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()
    assert result.result_hash == expected


def check_all(book: OrderBook) -> None:
    result = clear(book)
    check_result_hash_is_the_documented_json(result)
    check_welfare_not_negative(result)
    check_welfare_is_what_the_awards_say(book, result)
    check_awards_within_bounds(book, result)
    check_paid_at_least_lowest_tranche(book, result)
    check_nothing_procured_above_value(book, result)
    assert clear(book).result_hash == result.result_hash


@PROPERTY_SETTINGS
@given(random_books(all_or_nothing=False))
def test_properties_divisible_tranches_and_blocks(book):
    check_all(book)


@settings(PROPERTY_SETTINGS, max_examples=10, phases=[Phase.explicit, Phase.generate])
@given(random_books(all_or_nothing=True).filter(lambda b: any(o.min_fraction > 0 for o in b.offers)))
def test_properties_with_all_or_nothing_offers(book):
    check_all(book)


@st.composite
def scarce_storage_books(draw: st.DrawFn) -> OrderBook:
    """Storage offers at one feeder (1 kWh each: 4 kW·ISP) against requests of 2-6 kW in each of
    2-4 ISPs: the energy is often scarce, and then many optima differ only in which offer serves
    which ISP."""
    n_isps = draw(st.integers(min_value=2, max_value=4))
    offers = [
        Offer(
            id=f"o{k}",
            congestion_point="F1",
            direction=UP,
            first_isp=0,
            quantities_kw=tuple(draw(st.sampled_from([2.0, 4.0, 6.0])) for _ in range(n_isps)),
            tranches=((1.0, draw(st.sampled_from([30.0, 40.0]))),),
            submitted_at=at(k),
            storage=Storage(draw(st.sampled_from([1.0, 2.0])), 1.0, 1.0),
        )
        for k in range(draw(st.integers(min_value=2, max_value=3)))
    ]
    requests = [
        Request(f"r{i}", "F1", UP, i, (draw(st.sampled_from([2.0, 4.0, 6.0])),), 100.0, at(0)) for i in range(n_isps)
    ]
    return OrderBook(ISPS[:n_isps], 0.25, tuple(offers), tuple(requests), dict(RADIAL))


@settings(PROPERTY_SETTINGS, max_examples=20)
@given(st.one_of(random_books(all_or_nothing=False), scarce_storage_books()))
def test_awards_do_not_depend_on_the_highs_algorithm(book):
    """Where several solutions are optimal, the tie-break's rules choose, not the solver's path:
    every LP solved by the primal instead of the dual simplex (another vertex where there are
    several) gives the same awards, prices and rejections."""
    reference = summary(clear(book))
    primal = {"presolve": "off", "simplex_strategy": 4}
    with mock.patch("market.clearing.solve.highs_options", return_value=primal):
        assert summary(clear(book)) == reference


def test_result_hash_with_quotes_and_non_ascii_ids():
    """Ids are JSON strings in the hashed document: escaped as json.dumps escapes them."""
    offers = (
        Offer('o-"ü"', "T", UP, 0, (5.0,), ((1.0, 50.0),), at(1)),
        Offer("o-\\2\u2603", "T", UP, 0, (5.0,), ((1.0, 90.0),), at(2)),
    )
    requests = (Request("r-é", "T", UP, 0, (7.0,), 100.0, at(0)),)
    result = clear(OrderBook(ISPS[:1], 0.25, offers, requests, {("T", "T"): 1.0}, PricingRule.PAY_AS_CLEAR))
    assert len(result.awards) == 2
    check_result_hash_is_the_documented_json(result)


def test_a_block_between_its_bounds_is_checked_within_the_watt_rounding():
    """Found by the properties with more examples: block B (0.5 then 4.6 kW at 5) is activated to
    0.5/4.6 = 0.1087 to meet T's 0.5 kW at ISP 1, and breaks even exactly (λ_0 = 40 from the
    offers priced at the request's value, λ_1 = (5 · 5.1 − 0.5 · 40)/4.6 = 1.1957). Published to the
    watt, 0.054 and 0.500 kW earn 2.7578 against 5 × 0.554 = 2.77: short by rounding only."""
    single = ((1.0, 40.0),)
    result_book = OrderBook(
        ISPS[:2],
        0.25,
        (
            Offer("o0", "T", UP, 0, (0.5,), single, at(0)),
            Offer("o1", "T", UP, 1, (0.5,), single, at(0)),
            Offer("o2", "T", UP, 0, (0.5,), ((0.25, 40.0), (0.75, 40.0)), at(0)),
            Offer("B", "T", UP, 0, (0.5, 4.6), ((1.0, 5.0),), at(0), block=True),
        ),
        (Request("r0", "T", UP, 0, (0.5,), 40.0, at(0)), Request("r1", "T", UP, 1, (0.5,), 40.0, at(0))),
        dict(RADIAL),
        PricingRule.PAY_AS_CLEAR,
    )
    result = clear(result_book)
    assert {p.isp: p.price_per_mwh for p in result.points} == {0: Decimal("40.0000"), 1: Decimal("1.1957")}
    block = next(a for a in result.awards if a.offer_id == "B")
    assert block.accepted_kw == (Decimal("0.054"), Decimal("0.500"))
    check_all(result_book)
