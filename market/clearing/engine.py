"""The clearing: order book in, awards, prices and rejections out. Pure: no database, no I/O.

Steps per independent component of ISPs (see :mod:`market.clearing.decompose`):

1. Build the model (:mod:`market.clearing.model`). With all-or-nothing offers solve the MILP
   (HiGHS), then fix the binaries and continue with the LP (MARKET.md: prices then come from the
   LP re-solved with the integer decisions fixed).
2. Solve the LP; welfare ``W*``.
3. Quantities: the optimum may not be unique (a flat overlap), so re-solve over the optimal face
   (only the columns it leaves free: a small LP unless the overlap is wide) with a secondary
   objective: most procured kW first, then earlier submissions first (MARKET.md:
   break ties in quantity by time priority), then an offer's earlier ISPs first (a storage offer's
   energy could otherwise go to any of several ISPs). The rank weights are below 1 kW each so they
   never outweigh a kW of procurement. Where optima remain that only swap ISPs between offers
   (their rank weights cancel), a last LP over those optima gives earlier offers the earlier ISPs.
   The optimal face is exact: complementary slackness with an optimal dual that the pricing
   computes from the bids (not the solver's duals, and not welfare held within a tolerance, which
   the secondary objective would spend).
4. Prices: the relief rows' duals, made unique by the midpoint rule (:mod:`market.clearing.pricing`),
   read from the published solution of step 3.

Accepted kW are rounded to 3 decimals (1 W) and prices to 4 decimals per MWh, after snapping
values within the solver's tolerance of a bound to the bound, so results do not depend on the
solver's last digits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from json.encoder import encode_basestring_ascii
from typing import Any

import numpy as np
import numpy.typing as npt
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
from market.clearing.decompose import isp_components
from market.clearing.model import (
    RELIEF,
    A,
    FlatBook,
    FloatArray,
    IntArray,
    LinearModel,
    OfferTable,
    X,
    Y,
    build_model,
)
from market.clearing.overlap import ahead
from market.clearing.pricing import PRICE_TOL, optimal_dual, reduced_costs, row_prices
from market.clearing.solve import (
    DEFAULT_SOLVER,
    Compiled,
    Solution,
    SolverError,
    compile_model,
    solve,
    solve_highs_lexicographic,
    solve_highs_mip,
)

KW = Decimal("0.001")
RESULT_TOL = 5e-4
"""kW: results are published to the watt, so a solver's value within half a watt of a bound is that
bound, and half a watt or less is nothing."""
MILP_WELFARE_TOL = 1e-6
"""Absolute part of how far below the MILP's best welfare the MILP tie-break may go (model units:
EUR/MWh × kW summed over ISPs; the relative part is 1e-12). Float rounding: the most welfare it
can trade for priority is about 1e-4 of those units on a welfare of 1e8, 2.5e-8 EUR."""
_GOLDEN = (5**0.5 - 1) / 2
_SILVER = 2**0.5 - 1
"""Irrational steps of the Weyl sequences that offset the tie-break's swap weights (:func:`_priority`)."""
PRICE = Decimal("0.0001")
MONEY = Decimal("0.01")


def _kw(value: float) -> Decimal:
    return Decimal(repr(round(float(value), 6))).quantize(KW, rounding=ROUND_HALF_EVEN) + 0


def _price(value: float) -> Decimal:
    return Decimal(repr(round(float(value), 6))).quantize(PRICE, rounding=ROUND_HALF_EVEN) + 0


# -- hashing ----------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _digest(value: Any) -> str:
    return hashlib.sha256(_json(value).encode()).hexdigest()


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
    columns = _Columns.of(book)
    components = isp_components(len(book.isps), columns.offers)
    tally = _Tally.empty(book.pricing_rule, columns)
    welfare = 0.0
    degenerate_components = 0
    input_hash: Future[str] | None = None
    overlap = len(columns.slots.kw) >= OVERLAP_MIN_ENTRIES
    solved = solved_components(book, columns, components, solver, overlap=overlap)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clearing-hash") as pool:
        # Components are built, compiled and solved in threads ahead of this loop (solved_components).
        for component, model, optimum, lb, ub in ahead(solved) if overlap else solved:
            if input_hash is None and overlap:
                # The book's hash is pure Python: it runs while HiGHS (which releases the GIL) solves the
                # next components. Started once the first is solved, so it does not slow down the
                # first model, which the solver waits for.
                input_hash = pool.submit(book_hash, book)
            # The solver's optimum gives one exact optimal dual; the tie-break finds the published
            # solution on the face it describes; prices come from that solution, a vertex to the
            # last digit (an interior-point optimum can sit a watt off a bound it belongs on, which
            # would make an offer look marginal).
            solution = _tie_break(model, optimal_dual(model, optimum, lb, ub), optimum, lb, ub, component)
            priced = row_prices(model, solution, lb, ub)
            degenerate_components += priced.degenerate
            welfare += solution.objective
            tally.collect(component, model, solution, priced.prices)
        book_digest = (input_hash or pool.submit(book_hash, book)).result()

    awards, rejections = _awards(columns, tally)
    request_awards = _request_awards(columns, tally)
    money_welfare = _welfare(book, columns, tally, request_awards)
    result = ClearingResult(
        awards=awards,
        rejections=rejections,
        points=tuple(sorted(tally.points, key=lambda p: (p.isp, p.congestion_point, -p.direction))),
        request_awards=request_awards,
        welfare=money_welfare,
        input_hash=book_digest,
        result_hash="",
        components=len(components),
        solver=solver,
        diagnostics={"degenerate_components": float(degenerate_components), "lp_welfare": welfare},
    )
    return dataclasses.replace(result, result_hash=result_hash(result))


def result_hash(result: ClearingResult) -> str:
    """Hash of everything a participant is told: awards, prices, rejections, point results, welfare.

    The SHA-256 of this document's canonical JSON (``json.dumps`` with ``separators=(",", ":")``),
    every Decimal as its ``str``::

        {"awards": [[offer_id, first_isp, [kW, ...], [price, ...], activation or null], ...],
         "rejections": [[offer_id, reason], ...],
         "points": [[point, isp, direction, requested, procured, unmet, price], ...],
         "requests": [[request_id, first_isp, [kW, ...]], ...],
         "welfare": welfare}

    The awards' and requests' arrays of (order, ISP) cells, millions in a large clearing, are written
    here directly rather than through ``json.dumps``. A clearing shares one Decimal object per
    distinct value, so each object is printed once and found again by identity (not by value:
    0 and 0.0000 are equal but print differently); every object stays alive in ``result``.
    """
    quoted: dict[int, str] = {}

    def cells(values: tuple[Decimal, ...]) -> str:
        try:
            return ",".join(map(quoted.__getitem__, map(id, values)))
        except KeyError:
            for value in values:
                quoted.setdefault(id(value), f'"{value}"')
            return ",".join(map(quoted.__getitem__, map(id, values)))

    text = encode_basestring_ascii
    awards = ",".join(
        f"[{text(a.offer_id)},{a.first_isp},[{cells(a.accepted_kw)}],[{cells(a.price_per_mwh)}],"
        f"{'null' if a.activation is None else text(str(a.activation))}]"
        for a in result.awards
    )
    requests = ",".join(f"[{text(r.request_id)},{r.first_isp},[{cells(r.procured_kw)}]]" for r in result.request_awards)
    rejections = _json([[r.offer_id, r.reason.value] for r in result.rejections])
    points = _json(
        [
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
        ]
    )
    document = (
        f'{{"awards":[{awards}],"rejections":{rejections},"points":{points},'
        f'"requests":[{requests}],"welfare":{text(str(result.welfare))}}}'
    )
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass
class _Slots:
    """Every (order, ISP) position of a list of orders, order by order: ``kw`` at ISP ``isp`` of
    order ``order``; ``start[i]:start[i + 1]`` are order ``i``'s positions."""

    order: IntArray
    isp: IntArray
    kw: FloatArray
    start: IntArray

    @classmethod
    def of(cls, orders: Sequence[Offer] | Sequence[Request]) -> _Slots:
        lengths = np.fromiter((len(o.quantities_kw) for o in orders), dtype=np.int64, count=len(orders))
        start = np.zeros(len(orders) + 1, dtype=np.int64)
        np.cumsum(lengths, out=start[1:])
        kw = np.fromiter(
            itertools.chain.from_iterable(o.quantities_kw for o in orders), dtype=np.float64, count=int(start[-1])
        )
        first = np.fromiter((o.first_isp for o in orders), dtype=np.int64, count=len(orders))
        order = np.repeat(np.arange(len(orders), dtype=np.int64), lengths)
        isp = np.repeat(first - start[:-1], lengths) + np.arange(int(start[-1]), dtype=np.int64)
        return cls(order, isp, kw, start)


@dataclass
class _Columns:
    """The whole book as arrays, built once: offers and requests in time priority, their slots and
    per-offer attributes. Components are cut from it by ISP (:meth:`components`)."""

    offers: list[Offer]
    requests: list[Request]
    points: list[str]
    relief: sp.csr_matrix
    offer_table: OfferTable
    slots: _Slots
    request_point: IntArray
    request_direction: IntArray
    request_value: FloatArray
    request_slots: _Slots

    @classmethod
    def of(cls, book: OrderBook) -> _Columns:
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
        depth = max((len(o.tranches) for o in offers), default=1)
        share = np.zeros((len(offers), depth))
        price = np.zeros((len(offers), depth))
        count = np.zeros(len(offers), dtype=np.int64)
        for i, offer in enumerate(offers):
            count[i] = len(offer.tranches)
            for k, (s, p) in enumerate(offer.tranches):
                share[i, k] = s
                price[i, k] = p
        return cls(
            offers=offers,
            requests=requests,
            points=points,
            relief=relief,
            offer_table=OfferTable(
                point=np.asarray([point_index[o.congestion_point] for o in offers], dtype=np.int64),
                direction=np.asarray([o.direction for o in offers], dtype=np.int64),
                tranche_share=share,
                tranche_price=price,
                tranche_count=count,
                block=np.asarray([o.block for o in offers], dtype=bool),
                storage=np.asarray([o.storage is not None for o in offers], dtype=bool),
                min_fraction=np.asarray([o.min_fraction for o in offers], dtype=np.float64),
            ),
            slots=_Slots.of(offers),
            request_point=np.asarray([point_index[r.congestion_point] for r in requests], dtype=np.int64),
            request_direction=np.asarray([r.direction for r in requests], dtype=np.int64),
            request_value=np.asarray([r.value_per_mwh for r in requests], dtype=np.float64),
            request_slots=_Slots.of(requests),
        )

    def components(self, components: list[list[int]], component_of: IntArray, isp_hours: float) -> Iterator[FlatBook]:
        """One :class:`FlatBook` per component: the entries (positive kW) at its ISPs. Linking offers
        lie inside one component (see :mod:`market.clearing.decompose`); any other order contributes
        only its ISPs in the component."""
        entries = np.flatnonzero(self.slots.kw > 0)
        request_entries = np.flatnonzero(self.request_slots.kw > 0)
        by_offer = _split(entries, component_of[self.slots.isp[entries]], len(components))
        by_request = _split(request_entries, component_of[self.request_slots.isp[request_entries]], len(components))
        for isps, ids, request_ids in zip(components, by_offer, by_request, strict=True):
            first = isps[0]
            offer_ids, entry_offer = np.unique(self.slots.order[ids], return_inverse=True)
            request_of, entry_request = np.unique(self.request_slots.order[request_ids], return_inverse=True)
            yield FlatBook(
                isps=list(range(first, isps[-1] + 1)),
                points=self.points,
                relief=self.relief,
                all_offers=self.offers,
                offer_ids=offer_ids,
                all_requests=self.requests,
                request_ids=request_of,
                offer_table=self.offer_table.take(offer_ids),
                offer_rank=offer_ids,
                entry_offer=entry_offer.reshape(-1).astype(np.int64),
                entry_isp=self.slots.isp[ids] - first,
                entry_kw=self.slots.kw[ids],
                entry_id=ids,
                request_point=self.request_point[request_of],
                request_direction=self.request_direction[request_of],
                request_value=self.request_value[request_of],
                request_entry=entry_request.reshape(-1).astype(np.int64),
                request_isp=self.request_slots.isp[request_ids] - first,
                request_kw=self.request_slots.kw[request_ids],
                request_entry_id=request_ids,
                isp_hours=isp_hours,
            )


def _split(ids: IntArray, key: IntArray, count: int) -> list[IntArray]:
    """``ids`` grouped by ``key`` (``0..count-1``), each group in its original order."""
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(count + 1))
    return [ids[order[bounds[c] : bounds[c + 1]]] for c in range(count)]


OVERLAP_MIN_ENTRIES = 200_000
"""(offer, ISP) entries from which a clearing runs its steps in threads (:func:`solved_components`).
Below, each component's solve takes milliseconds and there is little to overlap, while handing each
through three threads costs GIL hand-overs (10,000 offers of 1-4 ISPs, 25,000 entries in 96
components: 1.35-1.99 s with threads against 1.16-1.65 s without, three alternating runs each)."""


def solved_components(
    book: OrderBook, columns: _Columns, components: list[list[int]], solver: str, *, overlap: bool = False
) -> Iterator[tuple[FlatBook, LinearModel, Solution, FloatArray, FloatArray]]:
    """Each component with a request, its model, and the solver's optimum with the bounds it was
    solved under (binaries fixed where the MILP decided them). A component with no request has
    nothing to relieve: every offer there is rejected with ``no_request``.

    With ``overlap``, the models are built and compiled in a thread of their own
    (:mod:`market.clearing.overlap`), in the components' order, and the caller is expected to run
    this generator in another (``clear`` does), so the Python work of building the next model and
    of using the last optimum runs while HiGHS solves.
    """
    compiled_components = _compiled_components(columns, components, book.isp_hours, solver)
    for component, model, compiled in ahead(compiled_components) if overlap else compiled_components:
        if compiled is None:
            solution, lb, ub = _solve_component(model, component, solver)
        else:
            solution, lb, ub = compiled.run(), model.lb.copy(), model.ub.copy()
        yield component, model, solution, lb, ub


def _compiled_components(
    columns: _Columns, components: list[list[int]], isp_hours: float, solver: str
) -> Iterator[tuple[FlatBook, LinearModel, Compiled | None]]:
    """Each component with a request and its model, with the LP compiled for ``solver`` (None for
    a model with binaries: its LP's bounds are known only once the MILP has fixed them)."""
    component_of = np.empty(sum(len(isps) for isps in components), dtype=np.int64)
    for c, isps in enumerate(components):
        component_of[isps] = c
    for component in columns.components(components, component_of, isp_hours):
        if component.n_requests:
            model = build_model(component)
            yield component, model, None if model.integer.any() else compile_model(model, solver)


def _solve_component(model: LinearModel, component: FlatBook, solver: str) -> tuple[Solution, np.ndarray, np.ndarray]:
    """A model with binaries: the MILP (HiGHS) decides them, then the LP is solved with them fixed.

    Several choices of binaries can reach the best welfare (two all-or-nothing offers of the same
    size and price for one request). The LP's tie-break cannot choose among them once they are
    fixed, so a second MILP does, among the choices within rounding of that welfare, by the
    tie-break's weights (:func:`_priority`): most procured kW, then earlier submissions first. The
    weights are per kW and even in rank, so two choices can still weigh the same: one 10 kW offer
    against two of 5 kW submitted just before and just after it. HiGHS picks between those.
    """
    lb, ub = model.lb.copy(), model.ub.copy()
    if model.integer.any():
        best = solve(model, DEFAULT_SOLVER, integer=True)
        welfare = min(best.objective, float(model.c @ best.v))
        floor = welfare - (MILP_WELFARE_TOL + 1e-12 * abs(welfare))
        g, upper = _welfare_at_least(model, floor)
        priority = _priority(model, component)[0]
        try:
            v = solve_highs_mip(g, priority, upper, lb, ub, model.integer, "MILP tie-break", best.v)
        except SolverError:
            v = best.v  # HiGHS failed on the tie-break (never seen): keep the welfare MILP's choice
        fixed = np.round(v[model.integer])
        lb[model.integer] = fixed
        ub[model.integer] = fixed
    return solve(model, solver, lb=lb, ub=ub), lb, ub


def _tie_break(
    model: LinearModel, dual: FloatArray, optimum: Solution, lb: FloatArray, ub: FloatArray, component: FlatBook
) -> Solution:
    """Among optimal solutions: most procured kW, then earlier orders first, then an offer's earlier
    ISPs first (module docstring).

    Secondary objective ``Σ (1 + ε_r) y − Σ ε_o x`` where the weights ``ε`` fall with time priority,
    lie in (0, 0.5), and are counted per kW; the optima that only swap ISPs between offers, which
    these weights cannot tell apart, are then decided by the swap weights (:func:`_priority`).
    Both are optimised over the optimal face, which complementary slackness with an optimal dual
    describes exactly: every optimal solution has a column with a non-zero reduced cost at its
    bound, and a row with a positive dual binding. The dual is the pricing's
    (:func:`market.clearing.pricing.optimal_dual`), exact to rounding, not the solver's: an
    interior-point solver's duals carry its last digits of complementarity, enough to fix columns
    that can still move. With any optimal dual that is the same face, so the result is the same
    whichever solver cleared the auction; HiGHS solves it directly
    (:func:`market.clearing.solve.solve_highs_lexicographic`).
    """
    objectives = _priority(model, component)
    try:
        return _on_face(model, dual, objectives, lb, ub)
    except SolverError:
        # The face read from the solver's optimum is empty: that optimum was too inexact (seen
        # with an interior-point solver on requests of tens of thousands of kW, where its relative
        # accuracy leaves columns watts off their bounds). Hold welfare at that optimum instead.
        return _near_welfare(model, optimum, objectives, lb, ub)


def _priority(model: LinearModel, component: FlatBook) -> list[FloatArray]:
    """The tie-break's objectives, in order: the time-priority weights (:func:`_tie_break`) and,
    over several ISPs, the swap weights (the comment below)."""
    secondary = np.zeros(model.n)
    is_y = model.col_kind == Y
    # A component's requests are in time priority: the local index is the rank.
    n_requests = max(component.n_requests, 1)
    y_rank = model.col_order[is_y].astype(np.float64)
    secondary[is_y] = 1.0 + 0.5 * (n_requests - y_rank) / (n_requests + 1)
    flex = (model.col_kind == X) | (model.col_kind == A)
    n_offers = max(component.n_offers, 1)
    _, order = np.unique(component.offer_rank[model.col_order[flex]], return_inverse=True)
    # Within one offer, earlier ISPs first (a storage offer's energy could otherwise sit in any of
    # several ISPs at equal weight): a step in (0, 1) keeps each offer's weights apart from the next.
    isp = model.col_isp[flex]
    step = np.where(isp >= 0, (isp + 1) / (component.n_isps + 1), 1.0)
    kw_per_unit = np.ones(len(order))
    if np.any(model.col_kind == A):
        # An activation column carries a whole profile; weigh it per kW like divisible columns.
        profile_kw = np.asarray(abs(model.block_profile).sum(axis=0)).reshape(-1)[flex]
        kw_per_unit = np.where(model.col_kind[flex] == A, np.maximum(profile_kw, 1.0), 1.0)
    secondary[flex] = -0.5 * (order + step) / (n_offers + 1) * kw_per_unit
    # The smallest step between two weights (one ISP within one offer) must stand well above the
    # LP's optimality tolerance (1e-7), or HiGHS stops at whichever of two near-equal vertices it
    # meets first: scale the whole objective so that step is 0.01. Nothing else is traded against
    # it: the face below is exact.
    secondary *= 0.01 / (0.5 / ((component.n_isps + 1) * (n_offers + 1)))
    objectives = [secondary]
    if component.n_isps > 1:
        # The weights above add a rank part and an ISP part, so they cannot choose between two
        # solutions that only swap ISPs between offers (offer 1 more in ISP a and less in b, offer 2
        # the reverse): every such exchange sums to zero. A storage day is full of them. Among those
        # optima, earlier offers take earlier ISPs: weights that multiply a falling rank part by a
        # falling ISP part, so a two-offer swap is worth (Δ rank part)·(Δ ISP part) ≠ 0. Evenly
        # spaced parts would still cancel on longer exchanges (the sum of ± rank·ISP over a cycle
        # is often 0), so each part is offset by under half a step by an irrational (Weyl)
        # sequence: the parts stay in order and no exchange of whole kW sums to exactly zero.
        rank_part = (n_offers - order + 0.5 * np.mod(order * _GOLDEN, 1.0)) / (n_offers + 1)
        n_isps = component.n_isps
        isp_offset = 0.5 * np.mod(isp * _SILVER, 1.0)
        isp_part = np.where(isp >= 0, (n_isps - isp + isp_offset) / (n_isps + 1), 0.25 / (n_isps + 1))
        swap = np.zeros(model.n)
        # Per kW like the weights above, but an activation column (a whole block) counts once: it
        # cannot move between ISPs, and its profile's kW would only widen the range of the weights.
        swap[flex] = rank_part * isp_part * np.where(model.col_kind[flex] == A, 1.0, kw_per_unit)
        # The closest two parts are half a step apart: the smallest swap between two offers is 0.01.
        # An exchange among three or more can be smaller; only the offsets keep it from zero.
        swap *= 0.01 / ((0.5 / (n_offers + 1)) * (0.5 / (n_isps + 1)))
        objectives.append(swap)
    return objectives


def _on_face(
    model: LinearModel, dual: FloatArray, objectives: list[FloatArray], lb: FloatArray, ub: FloatArray
) -> Solution:
    """``max objectives[0]·v`` over the optimal face (columns with a non-zero reduced cost fixed at
    their bound, rows with a positive dual held binding), then the next objectives over the optima
    of the ones before (:func:`market.clearing.solve.solve_highs_lexicographic`)."""
    rc = reduced_costs(model, dual)
    decided = np.abs(rc) > PRICE_TOL * (1 + np.abs(model.c))
    lb, ub = lb.copy(), ub.copy()
    ub[decided & (rc < 0)] = lb[decided & (rc < 0)]
    lb[decided & (rc > 0)] = ub[decided & (rc > 0)]
    binding = dual > PRICE_TOL
    # Only the columns still free go to the solver; the fixed ones move to the right-hand sides.
    free = ub - lb > 0
    v = lb.copy()
    if free.any():
        fixed_part = model.G[:, ~free] @ lb[~free]
        g = model.G[:, free].tocsr()
        rows = np.diff(g.indptr) > 0
        h = model.h[rows] - fixed_part[rows]
        v[free] = solve_highs_lexicographic(
            g[rows],
            [objective[free] for objective in objectives],
            np.where(binding[rows], h, -np.inf),
            h,
            lb[free],
            ub[free],
            "tie-break LP",
        )
    # Rows with no free column never reached the solver (with every column fixed, none did): the
    # face is empty if the fixed columns break one, or leave slack where the dual says binding.
    # Half a watt (the published precision) of either is rounding.
    slack = model.h - model.G @ v
    tolerance = RESULT_TOL * (1 + 1e-6 * np.abs(model.h))
    if np.any(slack < -tolerance) or np.any(binding & (slack > tolerance)):
        raise SolverError("tie-break: the optimal face read from the dual is empty")
    return Solution(v=v, duals=dual, objective=float(model.c @ v))


def _welfare_at_least(model: LinearModel, floor: float) -> tuple[sp.csr_matrix, FloatArray]:
    """The model's rows ``G v ≤ h`` with one more, ``c·v ≥ floor`` (as ``−c·v ≤ −floor``): the
    feasible set of a follow-up problem that must keep the welfare reached."""
    g = sp.vstack([model.G, sp.csr_matrix(-model.c.reshape(1, -1))], format="csr")
    return g, np.append(model.h, -floor)


def _near_welfare(
    model: LinearModel, optimum: Solution, objectives: list[FloatArray], lb: FloatArray, ub: FloatArray
) -> Solution:
    """The objectives in turn (:func:`market.clearing.solve.solve_highs_lexicographic`) over the
    solutions within ``1e-9 · |W|`` of the optimum's welfare ``W``."""
    welfare = float(model.c @ optimum.v)
    g, upper = _welfare_at_least(model, welfare - 1e-9 * max(1.0, abs(welfare)))
    v = solve_highs_lexicographic(
        g, objectives, np.full(len(upper), -np.inf), upper, lb, ub, "tie-break LP near welfare"
    )
    return Solution(v=v, duals=optimum.duals, objective=float(model.c @ v))


@dataclasses.dataclass
class _Tally:
    """What the components of one clearing add up to, per offer slot, request slot and point."""

    rule: PricingRule
    accepted: FloatArray
    """kW per offer slot (0 where nothing was accepted)."""
    paid: FloatArray
    """Price per offer slot where something was accepted."""
    procured: FloatArray
    """kW per request slot."""
    activation: FloatArray
    reachable: npt.NDArray[np.bool_]
    """Per offer: some request in its direction on its path at one of its ISPs."""
    best_value: FloatArray
    """Per offer: the highest locational value of its relief over its reachable ISPs."""
    points: list[PointResult] = dataclasses.field(default_factory=list)

    @classmethod
    def empty(cls, rule: PricingRule, columns: _Columns) -> _Tally:
        n_offers = len(columns.offers)
        return cls(
            rule=rule,
            accepted=np.zeros(len(columns.slots.kw)),
            paid=np.zeros(len(columns.slots.kw)),
            procured=np.zeros(len(columns.request_slots.kw)),
            activation=np.zeros(n_offers),
            reachable=np.zeros(n_offers, dtype=bool),
            best_value=np.full(n_offers, -np.inf),
        )

    def collect(self, component: FlatBook, model: LinearModel, solution: Solution, prices: FloatArray) -> None:
        near = RESULT_TOL / model.kw_per_unit()
        v = np.where(
            np.abs(solution.v - model.lb) <= near,
            model.lb,
            np.where(np.abs(solution.v - model.ub) <= near, model.ub, solution.v),
        )
        value, helps = self._points(component, model, v, prices)
        kw, bid_money = self._flex(component, model, v)
        self._offers(component, value, helps, kw, bid_money)
        is_y = model.col_kind == Y
        # The y columns are the component's request entries, in order (build_model).
        self.procured[component.request_entry_id] += v[is_y]

    def _points(
        self, component: FlatBook, model: LinearModel, v: FloatArray, prices: FloatArray
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Point results; and per offer entry, its locational value and whether it can help."""
        rows = np.flatnonzero(model.row_kind == RELIEF)
        is_y = model.col_kind == Y
        g_y = model.G[rows][:, is_y]
        requested, got = g_y @ model.ub[is_y], g_y @ v[is_y]
        point, isp, direction = model.row_point[rows], model.row_isp[rows], model.row_direction[rows]
        side = np.where(direction == 1, 0, 1)
        shape = (len(component.points), component.n_isps, 2)
        price = np.zeros(shape)
        price[point, isp, side] = prices[rows]
        has_row = np.zeros(shape, dtype=bool)
        has_row[point, isp, side] = True
        base = component.isps[0]
        for i in range(len(rows)):
            asked, procured = _kw(float(requested[i])), _kw(float(got[i]))
            self.points.append(
                PointResult(
                    congestion_point=component.points[int(point[i])],
                    isp=base + int(isp[i]),
                    direction=int(direction[i]),
                    requested_kw=asked,
                    procured_kw=procured,
                    unmet_kw=asked - procured,
                    price_per_mwh=_price(float(prices[rows[i]])),
                )
            )
        # Locational value of a kW up at (source, t): Σ sensitivity × (price up − price down) over
        # the points it relieves; a kW down earns the opposite. It helps if a request in its own
        # direction sits on its path.
        relief = component.relief
        up_value = relief @ (price[:, :, 0] - price[:, :, 1])
        pattern = relief.copy()
        pattern.data = np.ones_like(pattern.data)
        reaches_up, reaches_down = pattern @ has_row[:, :, 0], pattern @ has_row[:, :, 1]
        src = component.offer_table.point[component.entry_offer]
        t = component.entry_isp
        up = component.offer_table.direction[component.entry_offer] == 1
        value = np.where(up, up_value[src, t], -up_value[src, t])
        helps = np.where(up, reaches_up[src, t], reaches_down[src, t]) > 0
        return value, helps

    def _flex(self, component: FlatBook, model: LinearModel, v: FloatArray) -> tuple[FloatArray, FloatArray]:
        """kW accepted per entry, and what it costs at the offers' own tranche prices."""
        n_entries = len(component.entry_offer)
        key = component.entry_offer * component.n_isps + component.entry_isp  # ascending
        is_x = model.col_kind == X
        at = np.searchsorted(key, model.col_order[is_x] * component.n_isps + model.col_isp[is_x])
        kw = np.bincount(at, weights=v[is_x], minlength=n_entries).astype(np.float64)
        bid_money = np.bincount(at, weights=-v[is_x] * model.c[is_x], minlength=n_entries).astype(np.float64)
        for j in np.flatnonzero(model.col_kind == A).tolist():
            o = int(model.col_order[j])
            offer = component.offer(o)
            self.activation[component.offer_ids[o]] += v[j]
            total_kw = float(sum(offer.quantities_kw))
            tranche_price = -model.c[j] / total_kw if total_kw else 0.0
            mine = np.flatnonzero(component.entry_offer == o)
            kw[mine] += v[j] * component.entry_kw[mine]
            bid_money[mine] += v[j] * component.entry_kw[mine] * tranche_price
        return kw, bid_money

    def _offers(
        self,
        component: FlatBook,
        value: FloatArray,
        helps: npt.NDArray[np.bool_],
        kw: FloatArray,
        bid_money: FloatArray,
    ) -> None:
        offer = component.offer_ids[component.entry_offer]
        self.reachable[offer[helps]] = True
        np.maximum.at(self.best_value, offer[helps], value[helps])
        got = kw > RESULT_TOL
        slot = component.entry_id[got]
        self.accepted[slot] += kw[got]
        pay_as_clear = self.rule is PricingRule.PAY_AS_CLEAR
        self.paid[slot] = value[got] if pay_as_clear else bid_money[got] / kw[got]


def _exact(values: FloatArray, places: int) -> tuple[npt.NDArray[np.object_], IntArray]:
    """The distinct Decimals that :func:`_kw` (3 places) or :func:`_price` (4 places) makes of
    ``values`` (the exact rule, applied once per distinct value), and each value's position in them."""
    exact = _kw if places == 3 else _price  # noqa: PLR2004 - kW have 3 places, prices 4
    values = np.asarray(values, dtype=np.float64)
    distinct = np.unique(values)
    made = np.empty(len(distinct), dtype=object)
    made[:] = [exact(v) for v in distinct.tolist()]
    return made, np.searchsorted(distinct, values)


def _decimals(values: FloatArray, places: int) -> list[Decimal]:
    """``values`` as :func:`_exact` rounds them, one shared Decimal object per distinct value."""
    made, position = _exact(values, places)
    return list(made[position])


def _awards(columns: _Columns, tally: _Tally) -> tuple[tuple[Award, ...], tuple[Rejection, ...]]:
    slots = columns.slots
    got = tally.accepted > RESULT_TOL
    awarded = np.bincount(slots.order[got], minlength=len(columns.offers)) > 0
    # Only the awarded offers' slots become Decimals; an ISP with nothing accepted is paid Decimal(0).
    mine = awarded[slots.order]
    kw = _decimals(np.where(got, tally.accepted, 0.0)[mine], 3)
    paid_or_zero = np.empty(int(mine.sum()), dtype=object)
    paid_or_zero[:] = _decimals(tally.paid[mine], 4)
    paid_or_zero[~got[mine]] = Decimal(0)
    paid = list(paid_or_zero)
    at = np.zeros(len(columns.offers) + 1, dtype=np.int64)
    np.cumsum(np.where(awarded, np.diff(slots.start), 0), out=at[1:])
    first_price = columns.offer_table.tranche_price[:, 0]
    awards: list[Award] = []
    rejections: list[Rejection] = []
    for i in sorted(range(len(columns.offers)), key=lambda i: columns.offers[i].id):
        offer = columns.offers[i]
        if not awarded[i]:
            if not tally.reachable[i]:
                reason = RejectionReason.NO_REQUEST
            elif first_price[i] > tally.best_value[i] + 1e-6:
                reason = RejectionReason.ABOVE_MARGINAL_PRICE
            else:
                reason = RejectionReason.NOT_NEEDED
            rejections.append(Rejection(offer.id, reason))
            continue
        lo, hi = int(at[i]), int(at[i + 1])
        awards.append(
            Award(
                offer_id=offer.id,
                accepted_kw=tuple(kw[lo:hi]),
                price_per_mwh=tuple(paid[lo:hi]),
                first_isp=offer.first_isp,
                activation=_kw(tally.activation[i]) if offer.block else None,
            )
        )
    return tuple(awards), tuple(rejections)


def _request_awards(columns: _Columns, tally: _Tally) -> tuple[RequestAward, ...]:
    slots = columns.request_slots
    kw = _decimals(tally.procured, 3)
    some = np.bincount(slots.order[tally.procured > RESULT_TOL], minlength=len(columns.requests)) > 0
    return tuple(
        RequestAward(r.id, r.first_isp, tuple(kw[int(slots.start[i]) : int(slots.start[i + 1])]))
        for i, r in sorted(enumerate(columns.requests), key=lambda pair: pair[1].id)
        if some[i]
    )


MICRO = 10**6


def _micro(value: float) -> int | None:
    """``Decimal(repr(value))`` in millionths, if that is a whole number."""
    scaled = Decimal(repr(value)).scaleb(6)
    return int(scaled) if scaled == scaled.to_integral_value() else None


def _welfare(book: OrderBook, columns: _Columns, tally: _Tally, request_awards: tuple[RequestAward, ...]) -> Decimal:
    """Welfare in currency: Σ value × procured − Σ offer cost × accepted, × ISP hours / 1000.

    Exact decimal arithmetic. An accepted kW is a whole number of watts, so a single-price offer's
    cost is summed as integers (W × millionths of its price); offers with several tranches, or a
    price with more than 6 decimals, go through :func:`_tranche_cost` in Decimal.
    """
    hours = Decimal(repr(book.isp_hours))
    value = {r.id: Decimal(repr(r.value_per_mwh)) for r in columns.requests}
    total = Decimal(0)
    for request_award in request_awards:
        total += value[request_award.request_id] * sum(request_award.procured_kw, Decimal(0))
    slots = columns.slots
    got = np.flatnonzero(tally.accepted > RESULT_TOL)
    made, position = _exact(tally.accepted[got], 3)
    kws = made[position]
    watts = np.asarray([int(kw.scaleb(3)) for kw in made], dtype=np.int64)[position]
    offer_of = slots.order[got]
    awarded = np.unique(offer_of)
    price_micro = np.full(len(columns.offers), -1, dtype=np.int64)
    for i in awarded.tolist():
        if columns.offer_table.tranche_count[i] == 1 and columns.offer_table.tranche_share[i, 0] == 1.0:
            micro = _micro(float(columns.offer_table.tranche_price[i, 0]))
            if micro is not None and 0 <= micro < 2**40:
                price_micro[i] = micro
    # ... and only where the accepted watts are at most the offered kW (then min(kW, quantity) = kW):
    # the quantity is a whole number of watts exactly when q == (q·1000 rounded) / 1000 in floats.
    offered = slots.kw[got]
    offered_watts = np.rint(offered * 1000)
    whole = offered_watts / 1000 == offered
    simple = (price_micro[offer_of] >= 0) & whole & (watts <= offered_watts)
    if np.all(watts[simple] < 2**22):  # W × millionths stays below 2**62
        products = watts[simple] * price_micro[offer_of[simple]]
        total -= Decimal(sum(products.tolist())).scaleb(-9)
    else:
        simple[:] = False
    for k in np.flatnonzero(~simple).tolist():
        slot = int(got[k])
        offer = columns.offers[int(slots.order[slot])]
        total -= _tranche_cost(offer, kws[k], Decimal(repr(float(slots.kw[slot]))))
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
