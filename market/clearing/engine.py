"""The clearing: order book in, awards, prices and rejections out. Pure: no database, no I/O.

Steps per independent component of ISPs (see :mod:`market.clearing.decompose`):

1. Build the model (:mod:`market.clearing.model`). With all-or-nothing offers solve the MILP
   (HiGHS), then fix the binaries and continue with the LP (MARKET.md: prices then come from the
   LP re-solved with the integer decisions fixed).
2. Solve the LP; welfare ``W*``.
3. Prices: the relief rows' duals, made unique by the midpoint rule (:mod:`market.clearing.pricing`).
4. Quantities: if the optimum is not unique (a flat overlap), re-solve with welfare held at ``W*``
   and a secondary objective: most procured kW first, then earlier submissions first (MARKET.md:
   break ties in quantity by time priority). The rank weights are below 1 kW each so they never
   outweigh a kW of procurement.

Accepted kW are rounded to 3 decimals (1 W) and prices to 4 decimals per MWh, after snapping
values within the solver's tolerance of a bound to the bound, so results do not depend on the
solver's last digits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from market.clearing.book import (
    Award,
    ClearingResult,
    Offer,
    OrderBook,
    PointResult,
    PricingRule,
    Rejection,
    RejectionReason,
    Request,
    RequestAward,
    book_to_json,
)
from market.clearing.decompose import isp_components, links_isps
from market.clearing.model import RELIEF, A, FlatBook, LinearModel, X, Y, build_model
from market.clearing.pricing import PRICE_TOL, has_alternative_optima, reduced_costs, row_prices
from market.clearing.solve import DEFAULT_SOLVER, Solution, solve

KW = Decimal("0.001")
RESULT_TOL = 5e-4
"""kW: results are published to the watt, so a solver's value within half a watt of a bound is that
bound, and half a watt or less is nothing."""
PRICE = Decimal("0.0001")
MONEY = Decimal("0.01")


def _kw(value: float) -> Decimal:
    return Decimal(repr(round(float(value), 6))).quantize(KW, rounding=ROUND_HALF_EVEN) + 0


def _price(value: float) -> Decimal:
    return Decimal(repr(round(float(value), 6))).quantize(PRICE, rounding=ROUND_HALF_EVEN) + 0


# -- hashing ----------------------------------------------------------------------------------------


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def book_hash(book: OrderBook) -> str:
    """Hash of the book's canonical JSON, independent of the order offers and requests were listed in."""
    ordered = dataclasses.replace(
        book,
        offers=tuple(sorted(book.offers, key=lambda o: o.id)),
        requests=tuple(sorted(book.requests, key=lambda r: r.id)),
    )
    return _digest(book_to_json(ordered))


# -- the clearing ---------------------------------------------------------------------------------


def clear(book: OrderBook, solver: str = DEFAULT_SOLVER) -> ClearingResult:
    """Clear ``book``. Same book (in any order), same result."""
    offers = sorted(book.offers, key=lambda o: (o.submitted_at, o.id))
    requests = sorted(book.requests, key=lambda r: (r.submitted_at, r.id))
    points = sorted(
        {p for pair in book.relief for p in pair}
        | {o.congestion_point for o in offers}
        | {r.congestion_point for r in requests}
    )
    point_index = {p: i for i, p in enumerate(points)}
    relief = sp.csr_matrix(
        (
            list(book.relief.values()),
            ([point_index[s] for s, _ in book.relief], [point_index[t] for _, t in book.relief]),
        ),
        shape=(len(points), len(points)),
    )
    rank = {o.id: i for i, o in enumerate(offers)}
    components = isp_components(len(book.isps), offers)

    tally = _Tally(
        rule=book.pricing_rule,
        accepted={o.id: {} for o in offers},
        paid={o.id: {} for o in offers},
        procured={r.id: {} for r in requests},
    )
    welfare = 0.0
    degenerate_components = 0

    component_of = np.empty(len(book.isps), dtype=np.int64)
    for c, isps in enumerate(components):
        component_of[isps] = c
    offers_in = _by_component(offers, component_of, len(components))
    requests_in = _by_component(requests, component_of, len(components))
    for c, isps in enumerate(components):
        component = _component_book(book, isps, offers_in[c], requests_in[c], points, relief, point_index, rank)
        if not component.requests:
            continue  # nothing to relieve: every offer here is rejected with no_request
        model = build_model(component)
        solution, lb, ub = _solve_component(model, solver)
        prices, degenerate = row_prices(model, solution, lb, ub)
        degenerate_components += degenerate
        if has_alternative_optima(model, solution, lb, ub):
            solution = _tie_break(model, solution, lb, ub, component, solver)
        welfare += solution.objective
        tally.collect(component, model, solution, prices)

    awards, rejections = _awards(offers, tally)
    request_awards = tuple(
        RequestAward(
            r.id,
            r.first_isp,
            tuple(_kw(tally.procured[r.id].get(r.first_isp + j, 0.0)) for j in range(len(r.quantities_kw))),
        )
        for r in sorted(requests, key=lambda r: r.id)
        if any(v > RESULT_TOL for v in tally.procured[r.id].values())
    )
    money_welfare = _welfare(book, offers, requests, awards, request_awards)
    result = ClearingResult(
        awards=awards,
        rejections=rejections,
        points=tuple(sorted(tally.points, key=lambda p: (p.isp, p.congestion_point, -p.direction))),
        request_awards=request_awards,
        welfare=money_welfare,
        input_hash=book_hash(book),
        result_hash="",
        components=len(components),
        solver=solver,
        diagnostics={"degenerate_components": float(degenerate_components), "lp_welfare": welfare},
    )
    return dataclasses.replace(result, result_hash=result_hash(result))


def result_hash(result: ClearingResult) -> str:
    """Hash of everything a participant is told: awards, prices, rejections, point results, welfare."""

    def text(values: Iterable[Decimal]) -> list[str]:
        return [str(v) for v in values]

    return _digest(
        {
            "awards": [
                [
                    a.offer_id,
                    a.first_isp,
                    text(a.accepted_kw),
                    text(a.price_per_mwh),
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
            "requests": [[r.request_id, r.first_isp, text(r.procured_kw)] for r in result.request_awards],
            "welfare": str(result.welfare),
        }
    )


def _by_component(orders: list[Any], component_of: np.ndarray, count: int) -> list[list[Any]]:
    """The orders touching each component, in their original order, each listed once per component."""
    lists: list[list[Any]] = [[] for _ in range(count)]
    for order in orders:
        seen: set[int] = set()
        for j, q in enumerate(order.quantities_kw):
            if q > 0:
                c = int(component_of[order.first_isp + j])
                if c not in seen:
                    seen.add(c)
                    lists[c].append(order)
    return lists


def _component_book(
    book: OrderBook,
    isps: list[int],
    offers: list[Offer],
    requests: list[Request],
    points: list[str],
    relief: sp.csr_matrix,
    point_index: dict[str, int],
    rank: dict[str, int],
) -> FlatBook:
    first, last = isps[0], isps[-1]
    members = set(isps)
    contiguous = last - first + 1 == len(isps)
    # Only this component's ISPs of an order that links nothing (linking offers lie inside by construction).
    chosen = [o if links_isps(o) else _clip(o, first, last, None if contiguous else members) for o in offers]
    chosen_requests = [_clip(r, first, last, None if contiguous else members) for r in requests]
    span = list(range(first, last + 1))
    return FlatBook(
        isps=span,
        points=points,
        relief=relief,
        offers=chosen,
        requests=chosen_requests,
        offer_point=np.asarray([point_index[o.congestion_point] for o in chosen], dtype=np.int64),
        offer_direction=np.asarray([o.direction for o in chosen], dtype=np.int64),
        offer_rank=np.asarray([rank[o.id] for o in chosen], dtype=np.int64),
        request_point=np.asarray([point_index[r.congestion_point] for r in chosen_requests], dtype=np.int64),
        request_direction=np.asarray([r.direction for r in chosen_requests], dtype=np.int64),
        isp_hours=book.isp_hours,
    )


OrderT = TypeVar("OrderT", Offer, Request)


def _clip(order: OrderT, first: int, last: int, members: set[int] | None) -> OrderT:
    """The part of an order's profile inside ISPs ``first..last`` (and in ``members``, if given)."""
    lo = max(order.first_isp, first)
    hi = min(order.first_isp + len(order.quantities_kw), last + 1)
    part = order.quantities_kw[lo - order.first_isp : hi - order.first_isp]
    if members is not None:
        part = tuple(v if lo + j in members else 0.0 for j, v in enumerate(part))
    elif lo == order.first_isp and len(part) == len(order.quantities_kw):
        return order
    return dataclasses.replace(order, first_isp=lo, quantities_kw=part)


def _solve_component(model: LinearModel, solver: str) -> tuple[Solution, np.ndarray, np.ndarray]:
    lb, ub = model.lb.copy(), model.ub.copy()
    if model.integer.any():
        mip = solve(model, DEFAULT_SOLVER, integer=True)
        fixed = np.round(mip.v[model.integer])
        lb[model.integer] = fixed
        ub[model.integer] = fixed
    return solve(model, solver, lb=lb, ub=ub), lb, ub


def _tie_break(
    model: LinearModel, solution: Solution, lb: np.ndarray, ub: np.ndarray, component: FlatBook, solver: str
) -> Solution:
    """Among optimal solutions: most procured kW, then earlier orders first (module docstring).

    Secondary objective, with welfare held at its optimum: ``Σ (1 + ε_r) y − Σ ε_o x`` where the
    weights ``ε`` fall with time priority, lie in (0, 0.5), and are counted per kW.
    """
    secondary = np.zeros(model.n)
    is_y = model.col_kind == Y
    request_rank = (
        np.asarray([(r.submitted_at, r.id) for r in component.requests], dtype=object).tolist()
        if component.requests
        else []
    )
    order_of_request = {key[1]: k for k, key in enumerate(sorted(tuple(x) for x in request_rank))}
    n_requests = max(len(component.requests), 1)
    y_rank = np.asarray([order_of_request[component.requests[int(o)].id] for o in model.col_order[is_y]], dtype=float)
    secondary[is_y] = 1.0 + 0.5 * (n_requests - y_rank) / (n_requests + 1)
    flex = (model.col_kind == X) | (model.col_kind == A)
    n_offers = max(len(component.offers), 1)
    _, order = np.unique(component.offer_rank[model.col_order[flex]], return_inverse=True)
    weight = 0.5 * (order + 1) / (n_offers + 1)
    if np.any(model.col_kind == A):
        # An activation column carries a whole profile; weigh it per kW like divisible columns.
        kw_per_unit = np.asarray(abs(model.block_profile).sum(axis=0)).reshape(-1)[flex]
        weight = weight * np.where(model.col_kind[flex] == A, np.maximum(kw_per_unit, 1.0), 1.0)
    secondary[flex] = -weight
    # Complementary slackness: a column with a non-zero reduced cost sits at the same bound in every
    # optimal solution, so fixing it there keeps the search on the optimal face whatever the
    # welfare tolerance below allows (it only absorbs the solver's last digits).
    rc = reduced_costs(model, solution.duals)
    decided = np.abs(rc) > PRICE_TOL * (1 + np.abs(model.c))
    lb, ub = lb.copy(), ub.copy()
    ub[decided & (rc < 0)] = lb[decided & (rc < 0)]
    lb[decided & (rc > 0)] = ub[decided & (rc > 0)]
    tolerance = 1e-9 * max(1.0, abs(solution.objective))
    held = solve(
        model, solver, objective=secondary, extra_rows=(-model.c, -solution.objective + tolerance), lb=lb, ub=ub
    )
    return Solution(v=held.v, duals=solution.duals, objective=float(model.c @ held.v))


@dataclasses.dataclass
class _Tally:
    """What the components of one clearing add up to, per offer, request and point."""

    rule: PricingRule
    accepted: dict[str, dict[int, float]]
    paid: dict[str, dict[int, float]]
    procured: dict[str, dict[int, float]]
    activation: dict[str, float] = dataclasses.field(default_factory=dict)
    points: list[PointResult] = dataclasses.field(default_factory=list)
    reachable: set[str] = dataclasses.field(default_factory=set)
    value_of: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    target_cache: dict[int, list[tuple[int, float]]] = dataclasses.field(default_factory=dict)

    def _targets(self, relief: sp.csr_matrix, point: int) -> list[tuple[int, float]]:
        """(target, factor) pairs a kW at ``point`` relieves; the relief matrix is the same for every
        component of a clearing, so it is read once per point."""
        cached = self.target_cache.get(point)
        if cached is None:
            lo, hi = relief.indptr[point], relief.indptr[point + 1]
            cached = list(zip(relief.indices[lo:hi].tolist(), relief.data[lo:hi].tolist(), strict=True))
            self.target_cache[point] = cached
        return cached

    def collect(self, component: FlatBook, model: LinearModel, solution: Solution, prices: np.ndarray) -> None:
        v = np.where(
            np.abs(solution.v - model.lb) <= RESULT_TOL,
            model.lb,
            np.where(np.abs(solution.v - model.ub) <= RESULT_TOL, model.ub, solution.v),
        )
        price_at = self._points(component, model, v, prices)
        kw, bid_money = self._flex(component, model, v)
        self._offers(component, price_at, kw, bid_money)
        base = component.isps[0]
        for j in np.flatnonzero(model.col_kind == Y).tolist():
            request = component.requests[int(model.col_order[j])]
            isp = base + int(model.col_isp[j])
            self.procured[request.id][isp] = self.procured[request.id].get(isp, 0.0) + float(v[j])

    def _points(
        self, component: FlatBook, model: LinearModel, v: np.ndarray, prices: np.ndarray
    ) -> dict[tuple[int, int, int], float]:
        price_at: dict[tuple[int, int, int], float] = {}
        is_y = model.col_kind == Y
        for i in np.flatnonzero(model.row_kind == RELIEF).tolist():
            key = (int(model.row_point[i]), int(model.row_isp[i]), int(model.row_direction[i]))
            price_at[key] = float(prices[i])
            in_row = is_y & (model.G[i].toarray().reshape(-1) > 0)
            requested, got = _kw(float(model.ub[in_row].sum())), _kw(float(v[in_row].sum()))
            self.points.append(
                PointResult(
                    congestion_point=component.points[key[0]],
                    isp=component.isps[0] + key[1],
                    direction=key[2],
                    requested_kw=requested,
                    procured_kw=got,
                    unmet_kw=requested - got,
                    price_per_mwh=_price(float(prices[i])),
                )
            )
        return price_at

    def _flex(
        self, component: FlatBook, model: LinearModel, v: np.ndarray
    ) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
        """kW accepted per (offer, local ISP), and what it costs at the offers' own tranche prices."""
        kw: dict[tuple[int, int], float] = {}
        bid_money: dict[tuple[int, int], float] = {}
        for j in np.flatnonzero(model.col_kind == X).tolist():
            key = (int(model.col_order[j]), int(model.col_isp[j]))
            kw[key] = kw.get(key, 0.0) + v[j]
            bid_money[key] = bid_money.get(key, 0.0) - v[j] * model.c[j]
        base = component.isps[0]
        for j in np.flatnonzero(model.col_kind == A).tolist():
            o = int(model.col_order[j])
            offer = component.offers[o]
            self.activation[offer.id] = self.activation.get(offer.id, 0.0) + v[j]
            total_kw = float(sum(offer.quantities_kw))
            tranche_price = -model.c[j] / total_kw if total_kw else 0.0
            for jj, q in enumerate(offer.quantities_kw):
                if q > 0:
                    key = (o, offer.first_isp + jj - base)
                    kw[key] = kw.get(key, 0.0) + v[j] * q
                    bid_money[key] = bid_money.get(key, 0.0) + v[j] * q * tranche_price
        return kw, bid_money

    def _offers(
        self,
        component: FlatBook,
        price_at: dict[tuple[int, int, int], float],
        kw: dict[tuple[int, int], float],
        bid_money: dict[tuple[int, int], float],
    ) -> None:
        base = component.isps[0]
        for o, offer in enumerate(component.offers):
            targets = self._targets(component.relief, int(component.offer_point[o]))
            for jj, q in enumerate(offer.quantities_kw):
                if q <= 0:
                    continue
                t = offer.first_isp + jj - base
                relieved = [
                    (target, factor)
                    for target, factor in targets
                    if (target, t, 1) in price_at or (target, t, -1) in price_at
                ]
                # "No request it can relieve": no request in the offer's own direction on its path.
                helps = any((target, t, offer.direction) in price_at for target, _ in relieved)
                # Locational value: Σ sensitivity × (price in the offer's direction − price against it).
                value = sum(
                    factor
                    * (
                        price_at.get((target, t, offer.direction), 0.0)
                        - price_at.get((target, t, -offer.direction), 0.0)
                    )
                    for target, factor in relieved
                )
                if helps:
                    self.reachable.add(offer.id)
                    self.value_of.setdefault(offer.id, []).append(value)
                amount = kw.get((o, t), 0.0)
                if amount <= RESULT_TOL:
                    continue
                isp = base + t
                self.accepted[offer.id][isp] = self.accepted[offer.id].get(isp, 0.0) + amount
                pay_as_clear = self.rule is PricingRule.PAY_AS_CLEAR
                self.paid[offer.id][isp] = value if pay_as_clear else bid_money[(o, t)] / amount


def _awards(offers: Iterable[Offer], tally: _Tally) -> tuple[tuple[Award, ...], tuple[Rejection, ...]]:
    awards: list[Award] = []
    rejections: list[Rejection] = []
    for offer in sorted(offers, key=lambda o: o.id):
        got = tally.accepted[offer.id]
        if not got or all(_kw(v) == 0 for v in got.values()):
            if offer.id not in tally.reachable:
                reason = RejectionReason.NO_REQUEST
            elif all(offer.tranches[0][1] > value + 1e-6 for value in tally.value_of[offer.id]):
                reason = RejectionReason.ABOVE_MARGINAL_PRICE
            else:
                reason = RejectionReason.NOT_NEEDED
            rejections.append(Rejection(offer.id, reason))
            continue
        span = range(offer.first_isp, offer.first_isp + len(offer.quantities_kw))
        awards.append(
            Award(
                offer_id=offer.id,
                accepted_kw=tuple(_kw(got.get(i, 0.0)) for i in span),
                price_per_mwh=tuple(_price(tally.paid[offer.id].get(i, 0.0)) if i in got else Decimal(0) for i in span),
                first_isp=offer.first_isp,
                activation=_kw(tally.activation[offer.id]) if offer.block else None,
            )
        )
    return tuple(awards), tuple(rejections)


def _welfare(
    book: OrderBook,
    offers: list[Offer],
    requests: list[Request],
    awards: tuple[Award, ...],
    request_awards: tuple[RequestAward, ...],
) -> Decimal:
    """Welfare in currency: Σ value × procured − Σ offer cost × accepted, × ISP hours / 1000."""
    hours = Decimal(repr(book.isp_hours))
    value = {r.id: Decimal(repr(r.value_per_mwh)) for r in requests}
    total = Decimal(0)
    for request_award in request_awards:
        total += value[request_award.request_id] * sum(request_award.procured_kw, Decimal(0))
    by_id = {o.id: o for o in offers}
    for award in awards:
        offer = by_id[award.offer_id]
        for j, kw in enumerate(award.accepted_kw):
            quantity = Decimal(repr(offer.quantities_kw[j])) if j < len(offer.quantities_kw) else Decimal(0)
            total -= _tranche_cost(offer, kw, quantity)
    return (total * hours / 1000).quantize(MONEY, rounding=ROUND_HALF_EVEN) + 0


def _tranche_cost(offer: Offer, kw: Decimal, quantity: Decimal) -> Decimal:
    """Cost of ``kw`` from an offer of ``quantity`` kW at this ISP: cheapest tranches first."""
    remaining = kw
    cost = Decimal(0)
    for share, price in offer.tranches:
        take = min(remaining, Decimal(repr(share)) * quantity)
        cost += take * Decimal(repr(price))
        remaining -= take
    return cost
