"""The auction as one linear program (a MILP with all-or-nothing offers), in matrix form.

Decision vector ``v = [x, a, y, z]``:

* ``x[o,k,t]`` kW accepted from tranche ``k`` of divisible offer ``o`` at ISP ``t``;
* ``a[o,k]`` activation of tranche ``k`` of block offer ``o`` (its whole profile, scaled);
* ``y[r,t]`` kW procured for request ``r`` at ISP ``t``;
* ``z[o]`` 1 if an all-or-nothing offer (``min_fraction > 0``) is accepted at all.

Objective (welfare, in currency per hour of ISP; the constant ``h/1000`` to currency is left out)::

    max  Σ_rt V_r · y[r,t]  −  Σ_okt p_ok · x[o,k,t]  −  Σ_ok p_ok · a[o,k] · Σ_t q[o,t]

Each ``add_*`` function adds one constraint family as one vectorised sparse block; its equation
is in its docstring. All families read a :class:`FlatBook`, a columnar copy of the order book.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from market.clearing.book import Offer, Request

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

X, A, Y, Z = 0, 1, 2, 3
"""Column kinds."""
RELIEF, STORAGE, MIN_FRACTION = 0, 1, 2
"""Row kinds."""


@dataclass
class OfferTable:
    """Per-offer attributes as arrays, one row per offer (the whole book's, or a component's)."""

    point: IntArray
    direction: IntArray
    tranche_share: FloatArray
    """(offer, tranche k): share of the offer's kW in tranche ``k`` (0 past its last tranche)."""
    tranche_price: FloatArray
    tranche_count: IntArray
    block: npt.NDArray[np.bool_]
    storage: npt.NDArray[np.bool_]
    min_fraction: FloatArray

    def take(self, rows: IntArray) -> OfferTable:
        """The table of the offers at ``rows``, in that order."""
        return OfferTable(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


@dataclass
class FlatBook:
    """The offers and requests of one component, as flat arrays over (order, ISP) entries.

    ISPs are local indexes ``0..n_isps-1`` into ``isps``; congestion points are indexes into
    ``points``; ``relief`` is the (points × points) sparse matrix of relief factors. Offers and
    requests are local indexes ``0..n-1``; ``offer_ids[o]`` is offer ``o``'s index in
    ``all_offers`` (likewise for requests). The entries hold only the component's own ISPs of an
    order that links nothing, so such an order is split between components.
    """

    isps: list[int]
    points: list[str]
    relief: sp.csr_matrix
    all_offers: Sequence[Offer]
    offer_ids: IntArray
    all_requests: Sequence[Request]
    request_ids: IntArray
    offer_table: OfferTable
    offer_rank: IntArray
    entry_offer: IntArray
    entry_isp: IntArray
    entry_kw: FloatArray
    entry_id: IntArray
    """Each entry's index in the whole book's entries (to add results up across components)."""
    request_point: IntArray
    request_direction: IntArray
    request_value: FloatArray
    request_entry: IntArray
    request_isp: IntArray
    request_kw: FloatArray
    request_entry_id: IntArray
    isp_hours: float

    @property
    def n_isps(self) -> int:
        return len(self.isps)

    @property
    def n_offers(self) -> int:
        return len(self.offer_ids)

    @property
    def n_requests(self) -> int:
        return len(self.request_ids)

    def offer(self, o: int) -> Offer:
        return self.all_offers[int(self.offer_ids[o])]


@dataclass
class LinearModel:
    """``max c·v  s.t.  G v ≤ h,  lb ≤ v ≤ ub,  v[integer] ∈ ℤ``, with a description of every
    column and row so results can be mapped back to orders."""

    c: FloatArray
    lb: FloatArray
    ub: FloatArray
    integer: npt.NDArray[np.bool_]
    col_kind: IntArray
    col_order: IntArray
    col_tranche: IntArray
    col_isp: IntArray
    G: sp.csr_matrix
    h: FloatArray
    row_kind: IntArray
    row_point: IntArray
    row_isp: IntArray
    row_direction: IntArray
    block_profile: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0)))
    """(x-like entries of block offers) × columns: kW at (offer, ISP) per unit of activation."""

    @property
    def n(self) -> int:
        return len(self.c)

    def kw_per_unit(self) -> FloatArray:
        """kW that one unit of each column moves: 1 for kW columns, the largest ISP of the profile
        for a block's activation (a fraction), 1 for a binary."""
        per_unit = np.ones(self.n)
        if self.block_profile.shape[0]:
            largest = np.asarray(abs(self.block_profile).max(axis=0).todense()).reshape(-1)
            blocks = self.col_kind == A
            per_unit[blocks] = np.maximum(largest[blocks], 1e-9)
        return per_unit


@dataclass
class _Builder:
    c: list[FloatArray] = field(default_factory=list)
    lb: list[FloatArray] = field(default_factory=list)
    ub: list[FloatArray] = field(default_factory=list)
    integer: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    kind: list[IntArray] = field(default_factory=list)
    order: list[IntArray] = field(default_factory=list)
    tranche: list[IntArray] = field(default_factory=list)
    isp: list[IntArray] = field(default_factory=list)
    n: int = 0

    def add_columns(
        self,
        kind: int,
        c: FloatArray,
        ub: FloatArray,
        order: IntArray,
        tranche: IntArray,
        isp: IntArray,
        *,
        integer: bool = False,
    ) -> IntArray:
        count = len(c)
        self.c.append(c)
        self.lb.append(np.zeros(count))
        self.ub.append(ub)
        self.integer.append(np.full(count, integer))
        self.kind.append(np.full(count, kind, dtype=np.int64))
        self.order.append(order.astype(np.int64))
        self.tranche.append(tranche.astype(np.int64))
        self.isp.append(isp.astype(np.int64))
        index = np.arange(self.n, self.n + count, dtype=np.int64)
        self.n += count
        return index


def _cat(parts: Sequence[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


@dataclass
class _Entries:
    """The (offer, ISP) entries of a set of offers, flattened."""

    offer: IntArray
    isp: IntArray
    kw: FloatArray


def _entries(book: FlatBook, offer_ids: IntArray, *, rebound: bool = False) -> _Entries:
    """The (offer, ISP, kW) entries of ``offer_ids``: the book's entries, or the offers' rebound."""
    if not rebound:
        chosen = np.zeros(book.n_offers, dtype=bool)
        chosen[offer_ids] = True
        keep = chosen[book.entry_offer]
        return _Entries(book.entry_offer[keep], book.entry_isp[keep], book.entry_kw[keep])
    offers, isps, kws = [], [], []
    for o in offer_ids.tolist():
        offer = book.offer(o)
        if offer.rebound_first_isp is None or not offer.rebound_kw:
            continue
        q = np.asarray(offer.rebound_kw, dtype=np.float64)
        local = np.arange(offer.rebound_first_isp, offer.rebound_first_isp + len(q)) - book.isps[0]
        keep = q > 0
        offers.append(np.full(int(keep.sum()), o))
        isps.append(local[keep])
        kws.append(q[keep])
    return _Entries(_cat(offers, np.int64), _cat(isps, np.int64), _cat(kws, np.float64))


def build_model(book: FlatBook) -> LinearModel:
    """Columns for every order, then each constraint family."""
    b = _Builder()
    divisible = np.flatnonzero(~book.offer_table.block)
    blocks = np.flatnonzero(book.offer_table.block)

    # x: one column per (divisible offer, tranche, ISP).
    entries = _entries(book, divisible)
    x_parts = []
    for k in range(int(book.offer_table.tranche_count[divisible].max(initial=0))):
        has = book.offer_table.tranche_count[entries.offer] > k
        cols = b.add_columns(
            X,
            -book.offer_table.tranche_price[entries.offer[has], k],
            book.offer_table.tranche_share[entries.offer[has], k] * entries.kw[has],
            entries.offer[has],
            np.full(int(has.sum()), k),
            entries.isp[has],
        )
        x_parts.append((cols, entries.offer[has], entries.isp[has], np.ones(int(has.sum()))))

    # a: one column per (block offer, tranche); its kW at ISP t is a · q[o,t].
    block_entries = _entries(book, blocks)
    block_rebound = _entries(book, blocks, rebound=True)
    a_offer, a_tranche, a_cost, a_ub = [], [], [], []
    for o in blocks.tolist():
        total_kw = float(sum(book.offer(o).quantities_kw))
        for k, (share, price) in enumerate(book.offer(o).tranches):
            a_offer.append(o)
            a_tranche.append(k)
            a_cost.append(-price * total_kw)
            a_ub.append(share)
    a_cols = b.add_columns(
        A,
        np.asarray(a_cost, dtype=np.float64),
        np.asarray(a_ub, dtype=np.float64),
        np.asarray(a_offer, dtype=np.int64),
        np.asarray(a_tranche, dtype=np.int64),
        np.full(len(a_offer), -1),
    )
    a_col_offer = np.asarray(a_offer, dtype=np.int64)

    # y: one column per (request, ISP).
    r_offer, r_isp = book.request_entry, book.request_isp
    y_cols = b.add_columns(
        Y,
        book.request_value[r_offer],
        book.request_kw,
        r_offer,
        np.zeros(len(r_offer), dtype=np.int64),
        r_isp,
    )

    # z: one binary per all-or-nothing offer.
    aon = np.flatnonzero(book.offer_table.min_fraction > 0)
    z_cols = b.add_columns(
        Z,
        np.zeros(len(aon)),
        np.ones(len(aon)),
        aon,
        np.zeros(len(aon), dtype=np.int64),
        np.full(len(aon), -1),
        integer=True,
    )

    n = b.n
    # Every (offer, ISP) kW contribution as a sparse map from columns: x entries directly, block
    # entries through their activation columns (the block-linking family).
    x_cols = np.concatenate([p[0] for p in x_parts]) if x_parts else np.zeros(0, dtype=np.int64)
    x_offer = np.concatenate([p[1] for p in x_parts]) if x_parts else np.zeros(0, dtype=np.int64)
    x_isp = np.concatenate([p[2] for p in x_parts]) if x_parts else np.zeros(0, dtype=np.int64)
    contribution = _Contribution(cols=x_cols, offer=x_offer, isp=x_isp, coef=np.ones(len(x_cols)))
    block = add_block_linking(block_entries, a_cols, a_col_offer)
    rebound = add_rebound(block_rebound, a_cols, a_col_offer)

    rows: list[_Rows] = [
        add_relief_constraints(
            book,
            contribution.merge(block),
            rebound,
            y_cols,
            r_offer,
            r_isp,
            n,
        ),
        add_storage_constraints(book, contribution.merge(block), n),
        add_min_fraction_constraints(
            book, contribution, a_cols, a_col_offer, z_cols, aon, b_ub=_cat(b.ub, np.float64), n=n
        ),
    ]
    G = sp.vstack([r.G for r in rows], format="csr") if rows else sp.csr_matrix((0, n))
    block_profile = sp.csr_matrix((block.coef, (np.arange(len(block.cols)), block.cols)), shape=(len(block.cols), n))
    return LinearModel(
        c=_cat(b.c, np.float64),
        lb=_cat(b.lb, np.float64),
        ub=_cat(b.ub, np.float64),
        integer=_cat(b.integer, np.bool_),
        col_kind=_cat(b.kind, np.int64),
        col_order=_cat(b.order, np.int64),
        col_tranche=_cat(b.tranche, np.int64),
        col_isp=_cat(b.isp, np.int64),
        G=G,
        h=np.concatenate([r.h for r in rows]),
        row_kind=np.concatenate([r.kind for r in rows]),
        row_point=np.concatenate([r.point for r in rows]),
        row_isp=np.concatenate([r.isp for r in rows]),
        row_direction=np.concatenate([r.direction for r in rows]),
        block_profile=block_profile,
    )


@dataclass
class _Contribution:
    """kW delivered by offer ``offer`` at local ISP ``isp`` = Σ coef · v[cols]."""

    cols: IntArray
    offer: IntArray
    isp: IntArray
    coef: FloatArray

    def merge(self, other: _Contribution) -> _Contribution:
        return _Contribution(
            np.concatenate([self.cols, other.cols]),
            np.concatenate([self.offer, other.offer]),
            np.concatenate([self.isp, other.isp]),
            np.concatenate([self.coef, other.coef]),
        )


@dataclass
class _Rows:
    G: sp.csr_matrix
    h: FloatArray
    kind: IntArray
    point: IntArray
    isp: IntArray
    direction: IntArray


def _no_rows(n: int) -> _Rows:
    empty = np.zeros(0, dtype=np.int64)
    return _Rows(sp.csr_matrix((0, n)), np.zeros(0), empty, empty, empty, empty)


def _activation_map(entries: _Entries, a_cols: IntArray, a_col_offer: IntArray) -> _Contribution:
    cols, offer, isp, coef = [], [], [], []
    by_offer: dict[int, list[int]] = {}
    for col, o in zip(a_cols.tolist(), a_col_offer.tolist(), strict=True):
        by_offer.setdefault(o, []).append(col)
    for o, t, q in zip(entries.offer.tolist(), entries.isp.tolist(), entries.kw.tolist(), strict=True):
        for col in by_offer.get(o, []):
            cols.append(col)
            offer.append(o)
            isp.append(t)
            coef.append(q)
    return _Contribution(
        np.asarray(cols, dtype=np.int64),
        np.asarray(offer, dtype=np.int64),
        np.asarray(isp, dtype=np.int64),
        np.asarray(coef, dtype=np.float64),
    )


def add_block_linking(entries: _Entries, a_cols: IntArray, a_col_offer: IntArray) -> _Contribution:
    """Block/profile linking: one activation for the whole profile of a block offer.

        kW[o,t] = q[o,t] · Σ_k a[o,k],   0 ≤ a[o,k] ≤ share_k

    The activation is substituted into every family that uses kW[o,t], so the profile cannot be
    accepted in different proportions in different ISPs.
    """
    return _activation_map(entries, a_cols, a_col_offer)


def add_rebound(entries: _Entries, a_cols: IntArray, a_col_offer: IntArray) -> _Contribution:
    """Rebound (payback): a block offer accepted with activation α owes ``α · R[o,t']`` kW in the
    opposite direction at its rebound ISPs ``t'``; it counts against relief in the offer's own
    direction and towards relief in the opposite one (see :func:`add_relief_constraints`)."""
    return _activation_map(entries, a_cols, a_col_offer)


def add_relief_constraints(
    book: FlatBook,
    flex: _Contribution,
    rebound: _Contribution,
    y_cols: IntArray,
    y_request: IntArray,
    y_isp: IntArray,
    n: int,
) -> _Rows:
    """Network relief, one row per (congestion point c, ISP t, direction d) that has requests::

        Σ_{r at c,d} y[r,t]  ≤  Σ_o S[c_o, c] · s(o,d) · kW[o,t]  −  Σ_o S[c_o, c] · s(o,d) · rebound[o,t]

    where ``S`` is the relief matrix and ``s(o,d)`` is +1 when offer ``o`` goes in direction ``d``
    and −1 otherwise. The row's dual is the locational price of relief at (c, t, d).
    """
    if len(y_cols) == 0:
        return _no_rows(n)
    n_points = len(book.points)
    direction_index = {1: 0, -1: 1}
    # Rows: every (point, isp, direction) with a request column.
    req_point = book.request_point[y_request]
    req_dir = book.request_direction[y_request]
    keys = (req_point * book.n_isps + y_isp) * 2 + np.where(req_dir == 1, 0, 1)
    row_keys, y_row = np.unique(keys, return_inverse=True)
    row_of_key = np.full(n_points * book.n_isps * 2, -1, dtype=np.int64)
    row_of_key[row_keys] = np.arange(len(row_keys))

    rows, cols, vals = [y_row], [y_cols], [np.ones(len(y_cols))]
    relief = book.relief.tocsr()
    for contribution, sign in ((flex, -1.0), (rebound, 1.0)):
        if len(contribution.cols) == 0:
            continue
        src = book.offer_table.point[contribution.offer]
        odir = book.offer_table.direction[contribution.offer]
        counts = np.diff(relief.indptr)[src]
        rep = np.repeat(np.arange(len(src)), counts)
        starts = relief.indptr[src]
        offsets = np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts)
        targets = relief.indices[np.repeat(starts, counts) + offsets]
        factors = relief.data[np.repeat(starts, counts) + offsets]
        for d, d_idx in direction_index.items():
            key = (targets * book.n_isps + contribution.isp[rep]) * 2 + d_idx
            row = row_of_key[key]
            keep = row >= 0
            same = np.where(odir[rep] == d, 1.0, -1.0)
            rows.append(row[keep])
            cols.append(contribution.cols[rep][keep])
            vals.append((sign * same * factors * contribution.coef[rep])[keep])
    G = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(row_keys), n))
    G.sum_duplicates()
    point = row_keys // 2 // book.n_isps
    isp = (row_keys // 2) % book.n_isps
    direction = np.where(row_keys % 2 == 0, 1, -1)
    return _Rows(G, np.zeros(len(row_keys)), np.full(len(row_keys), RELIEF), point, isp, direction)


def add_storage_constraints(book: FlatBook, flex: _Contribution, n: int) -> _Rows:
    """State of charge of storage offers, for every ISP t of the offer::

        up:    soc[o,t] = soc0 − Σ_{τ≤t} kW[o,τ] · h / η  ≥ 0          (discharging)
        down:  soc[o,t] = soc0 + Σ_{τ≤t} kW[o,τ] · h · η  ≤ capacity   (charging)

    An offer has one direction, so its state of charge moves one way and the other bound cannot
    bind; and since every kW is non-negative, the sum up to the last ISP is the largest, so the
    bound at the last ISP implies it at every earlier one. One row per offer is therefore exact:
    ``Σ_t kW[o,t] · h / η ≤ soc0`` (up) or ``Σ_t kW[o,t] · h · η ≤ capacity − soc0`` (down).
    """
    storage = np.flatnonzero(book.offer_table.storage)
    if len(storage) == 0:
        return _no_rows(n)
    row_of_offer = np.full(book.n_offers, -1, dtype=np.int64)
    row_of_offer[storage] = np.arange(len(storage))
    per_kw = np.zeros(book.n_offers)
    budget = np.zeros(len(storage))
    for row, o in enumerate(storage.tolist()):
        offer = book.offer(o)
        s = offer.storage
        assert s is not None  # noqa: S101 - filtered above
        up = offer.direction == 1
        per_kw[o] = book.isp_hours / s.efficiency if up else book.isp_hours * s.efficiency
        budget[row] = s.initial_kwh if up else s.capacity_kwh - s.initial_kwh
    rows = row_of_offer[flex.offer]
    keep = rows >= 0
    G = sp.csr_matrix(
        (per_kw[flex.offer[keep]] * flex.coef[keep], (rows[keep], flex.cols[keep])), shape=(len(storage), n)
    )
    G.sum_duplicates()
    return _Rows(
        G,
        budget,
        np.full(len(storage), STORAGE),
        np.full(len(storage), -1),
        np.full(len(storage), -1),
        np.zeros(len(storage), dtype=np.int64),
    )


def add_min_fraction_constraints(
    book: FlatBook,
    flex: _Contribution,
    a_cols: IntArray,
    a_col_offer: IntArray,
    z_cols: IntArray,
    aon: IntArray,
    b_ub: FloatArray,
    n: int,
) -> _Rows:
    """All-or-nothing and minimum acceptance fraction ``f`` with a binary ``z[o]``:

        divisible:  f · ub[j] · z[o] ≤ x[j] summed over tranches ≤ ub[j] · z[o]   for each ISP entry
        block:      f · z[o] ≤ Σ_k a[o,k] ≤ z[o]

    so an offer is either not accepted, or accepted at least to fraction ``f`` (1 = all or nothing).
    For a divisible offer over several ISPs one ``z`` covers all of them, which links those ISPs.
    """
    if len(aon) == 0:
        return _no_rows(n)
    z_of = {int(o): int(c) for o, c in zip(aon.tolist(), z_cols.tolist(), strict=True)}
    rows, cols, vals = [], [], []
    row = 0
    # Divisible: group x columns by (offer, isp), summing tranches.
    groups: dict[tuple[int, int], list[int]] = {}
    for col, o, t in zip(flex.cols.tolist(), flex.offer.tolist(), flex.isp.tolist(), strict=True):
        if o in z_of:
            groups.setdefault((o, t), []).append(col)
    for (o, _), group in sorted(groups.items()):
        f = book.offer(o).min_fraction
        full = float(sum(b_ub[c] for c in group))
        z = z_of[o]
        # Σx − full·z ≤ 0
        rows += [row] * (len(group) + 1)
        cols += [*group, z]
        vals += [1.0] * len(group) + [-full]
        row += 1
        # f·full·z − Σx ≤ 0
        rows += [row] * (len(group) + 1)
        cols += [*group, z]
        vals += [-1.0] * len(group) + [f * full]
        row += 1
    by_offer: dict[int, list[int]] = {}
    for col, o in zip(a_cols.tolist(), a_col_offer.tolist(), strict=True):
        if o in z_of:
            by_offer.setdefault(o, []).append(col)
    for o, group in sorted(by_offer.items()):
        f = book.offer(o).min_fraction
        z = z_of[o]
        rows += [row] * (len(group) + 1)
        cols += [*group, z]
        vals += [1.0] * len(group) + [-1.0]
        row += 1
        rows += [row] * (len(group) + 1)
        cols += [*group, z]
        vals += [-1.0] * len(group) + [f]
        row += 1
    G = sp.csr_matrix((vals, (rows, cols)), shape=(row, n))
    return _Rows(
        G, np.zeros(row), np.full(row, MIN_FRACTION), np.full(row, -1), np.full(row, -1), np.zeros(row, dtype=np.int64)
    )
