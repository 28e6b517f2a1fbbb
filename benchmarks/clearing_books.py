"""Random order books for the clearing benchmark, reproducible from a seed.

A book is first drawn as numpy columns (:class:`Columns`), so the raw-HiGHS floor of the largest
size can be built without a million Python objects; :func:`order_book` turns the columns into the
engine's :class:`~market.clearing.book.OrderBook`.

Grid: 200 congestion points, three levels: ``ROOT``, 14 transformers ``T00..T13`` under it and
185 feeders ``F000..F184`` spread round-robin over the transformers. Relief is the radial rule of
:func:`market.grid.relief.relief_factors` (a kW at a feeder relieves the feeder, its transformer
and the root, factor 1.0).

Requests: at each ISP, 30 % of the points (drawn anew per ISP, among the points that some upward
offer relieves at that ISP) ask for upward flexibility, one request per point and ISP, worth
100.00-500.00 /MWh. The quantity is a random share of the upward kW offered under that point at
that ISP (``request_share``), rounded to 0.1 kW, at least 1 kW, so some requests are met in full
and the dearer offers are left out.

Offers sit at random feeders: 90 % up, 10 % down; 1.0-50.0 kW per ISP; 90 % single price
10.00-600.00 /MWh, 10 % two tranches (shares k/10 and 1 - k/10, prices sorted). ``profile`` is the
number of ISPs per offer (96: the whole day), or ``None`` for 1-4 consecutive ISPs at a random
start. Storage offers (capacity 5.0-20.0 kWh, half full, efficiency 0.9) link their ISPs through
their state of charge, so a storage book is one component of 96 ISPs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from market.clearing.book import UP, Offer, OrderBook, PricingRule, Request, Storage
from market.grid.relief import relief_factors

SEED = 20_270_101
N_ISPS = 96
ISP_HOURS = 0.25
N_TRANSFORMERS = 14
N_FEEDERS = 185
REQUEST_POINT_SHARE = 0.3
MAX_FEW_ISPS = 4
ISPS = tuple(f"2027-01-01T{(15 * i) // 60:02d}:{(15 * i) % 60:02d}:00Z" for i in range(N_ISPS))


@dataclass(frozen=True)
class Size:
    name: str
    offers: int
    profile: int | None
    """ISPs per offer; ``None``: 1-4 ISPs."""
    storage: bool = False
    request_share: tuple[float, float] = (0.2, 0.8)
    """A request asks this share (uniform) of the upward kW offered under its point at its ISP."""

    def scaled(self, offers: int) -> Size:
        """The same shape with fewer offers (a probe for extrapolation)."""
        return replace(self, name=f"{self.name}@{offers}", offers=offers)

    def describe(self) -> str:
        span = "1-4 ISPs each" if self.profile is None else f"{self.profile}-ISP profile each"
        kind = "storage offers" if self.storage else "offers"
        return f"{self.offers:,} {kind} ({span}), {N_ISPS} ISPs"


SIZES = {
    "small": Size("small", 10_000, None),
    "medium": Size("medium", 100_000, N_ISPS),
    "large": Size("large", 1_000_000, N_ISPS),
    # Storage energy is scarce (a few kWh against kW for 96 ISPs): ask for a small share of the kW.
    "storage": Size("storage", 5_000, N_ISPS, storage=True, request_share=(0.005, 0.03)),
}


@dataclass
class Grid:
    points: list[str]
    parents: dict[str, str | None]
    relief: dict[tuple[str, str], float]
    feeders: npt.NDArray[np.int64]
    """Point indexes of the feeders."""
    relief_matrix: npt.NDArray[np.float64]
    """(source point, target point) relief factor, dense (200 × 200)."""


def grid() -> Grid:
    parents: dict[str, str | None] = {"ROOT": None}
    transformers = [f"T{i:02d}" for i in range(N_TRANSFORMERS)]
    parents.update(dict.fromkeys(transformers, "ROOT"))
    feeders = [f"F{i:03d}" for i in range(N_FEEDERS)]
    parents.update({f: transformers[i % N_TRANSFORMERS] for i, f in enumerate(feeders)})
    points = ["ROOT", *transformers, *feeders]
    index = {p: i for i, p in enumerate(points)}
    relief = {pair: float(factor) for pair, factor in relief_factors(parents).items()}
    matrix = np.zeros((len(points), len(points)))
    for (source, target), factor in relief.items():
        matrix[index[source], index[target]] = factor
    return Grid(points, parents, relief, np.asarray([index[f] for f in feeders], dtype=np.int64), matrix)


@dataclass
class Columns:
    """A book as arrays. Offer ``i`` has ``kw[i, j]`` kW at ISP ``first_isp[i] + j`` for
    ``j < length[i]`` (0 beyond); its tranches are ``(share1, price1)`` and, if ``two[i]``,
    ``(1 - share1, price2)``. ``arrival`` orders submissions."""

    size: Size
    grid: Grid
    offer_point: npt.NDArray[np.int64]
    direction: npt.NDArray[np.int64]
    first_isp: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    kw: npt.NDArray[np.float64]
    two: npt.NDArray[np.bool_]
    share1: npt.NDArray[np.float64]
    price1: npt.NDArray[np.float64]
    price2: npt.NDArray[np.float64]
    arrival: npt.NDArray[np.int64]
    capacity: npt.NDArray[np.float64] | None
    request_point: npt.NDArray[np.int64]
    request_isp: npt.NDArray[np.int64]
    request_kw: npt.NDArray[np.float64]
    request_value: npt.NDArray[np.float64]

    @property
    def n_offers(self) -> int:
        return len(self.offer_point)

    def entries(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(offer, ISP, kW) of every non-zero (offer, ISP) pair."""
        return _entries(self.kw, self.first_isp)

    def stats(self) -> dict[str, int]:
        offer, _, _ = self.entries()
        return {
            "offers": self.n_offers,
            "offer_isp_entries": len(offer),
            "offers_down": int((self.direction != UP).sum()),
            "offers_two_tranches": int(self.two.sum()),
            "storage_offers": 0 if self.capacity is None else self.n_offers,
            "requests": len(self.request_point),
            "congestion_points": len(self.grid.points),
        }


def columns(size: Size, seed: int = SEED) -> Columns:
    rng = np.random.default_rng(seed)
    g = grid()
    n = size.offers
    offer_point = g.feeders[rng.integers(0, len(g.feeders), n)]
    direction = np.where(rng.random(n) < 0.9, 1, -1).astype(np.int64)  # noqa: PLR2004 - 90 % up
    if size.profile is None:
        length = rng.integers(1, MAX_FEW_ISPS + 1, n)
        first_isp = rng.integers(0, N_ISPS - length + 1)
        width = MAX_FEW_ISPS
    else:
        length = np.full(n, size.profile, dtype=np.int64)
        first_isp = rng.integers(0, N_ISPS - size.profile + 1, n)
        width = size.profile
    kw = rng.integers(10, 501, (n, width)) / 10  # 1.0-50.0 kW, one decimal
    kw[np.arange(width)[None, :] >= length[:, None]] = 0.0
    two = rng.random(n) < 0.1  # noqa: PLR2004 - 10 % two tranches
    share1 = np.where(two, rng.integers(1, 10, n) / 10, 1.0)
    p = np.sort(rng.integers(1_000, 60_001, (n, 2)), axis=1) / 100  # 10.00-600.00
    price1 = np.where(two, p[:, 0], rng.integers(1_000, 60_001, n) / 100)
    price2 = np.where(two, p[:, 1], 0.0)
    arrival = rng.permutation(n).astype(np.int64)
    capacity = rng.integers(50, 201, n) / 10 if size.storage else None  # 5.0-20.0 kWh

    # Upward kW offered under each point at each ISP, then 30 % of the points per ISP ask for a share.
    n_points = len(g.points)
    e_offer, e_isp, e_kw = _entries(kw, first_isp)
    up = direction[e_offer] == UP
    at_feeder = np.bincount(
        offer_point[e_offer[up]] * N_ISPS + e_isp[up], weights=e_kw[up], minlength=n_points * N_ISPS
    ).reshape(n_points, N_ISPS)
    under = g.relief_matrix.T @ at_feeder  # (target point, ISP)
    per_isp = round(REQUEST_POINT_SHARE * n_points)
    # Only points that some upward offer relieves at that ISP: the engine cannot price a request that
    # nothing can meet (clear() raises SolverError "dual face LP ended with status unbounded").
    keys = np.where(under.T > 0, rng.random((N_ISPS, n_points)), 2.0)
    chosen = np.argsort(keys, axis=1)[:, :per_isp]  # (ISP, k) point indexes
    request_isp = np.repeat(np.arange(N_ISPS), per_isp)
    request_point = chosen.reshape(-1)
    served = under[request_point, request_isp] > 0
    request_isp, request_point = request_isp[served], request_point[served]
    low, high = size.request_share
    share = rng.uniform(low, high, len(request_point))
    return Columns(
        size=size,
        grid=g,
        offer_point=offer_point,
        direction=direction,
        first_isp=first_isp,
        length=length,
        kw=kw,
        two=two,
        share1=share1,
        price1=price1,
        price2=price2,
        arrival=arrival,
        capacity=capacity,
        request_point=request_point.astype(np.int64),
        request_isp=request_isp.astype(np.int64),
        request_kw=np.maximum(1.0, np.round(share * under[request_point, request_isp], 1)),
        request_value=rng.integers(10_000, 50_001, len(request_point)) / 100,
    )


def _entries(
    kw: npt.NDArray[np.float64], first_isp: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    offer, j = np.nonzero(kw > 0)
    return offer, first_isp[offer] + j, kw[offer, j]


def _submitted(rank: int) -> str:
    """A distinct submission time per arrival rank, the day before delivery."""
    seconds, micro = divmod(rank * 37, 1_000_000)
    return f"2026-12-31T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micro:06d}Z"


def order_book(cols: Columns) -> OrderBook:
    g = cols.grid
    offers = []
    kw_rows = cols.kw.tolist()
    for i in range(cols.n_offers):
        length = int(cols.length[i])
        tranches = (
            (
                (float(cols.share1[i]), float(cols.price1[i])),
                (round(1 - float(cols.share1[i]), 1), float(cols.price2[i])),
            )
            if cols.two[i]
            else ((1.0, float(cols.price1[i])),)
        )
        storage = None
        if cols.capacity is not None:
            capacity = float(cols.capacity[i])
            storage = Storage(capacity_kwh=capacity, initial_kwh=capacity / 2, efficiency=0.9)
        offers.append(
            Offer(
                id=f"o{i:07d}",
                congestion_point=g.points[int(cols.offer_point[i])],
                direction=int(cols.direction[i]),
                first_isp=int(cols.first_isp[i]),
                quantities_kw=tuple(kw_rows[i][:length]),
                tranches=tranches,
                submitted_at=_submitted(int(cols.arrival[i])),
                storage=storage,
            )
        )
    requests = tuple(
        Request(
            id=f"r{i:06d}",
            congestion_point=g.points[int(point)],
            direction=UP,
            first_isp=int(isp),
            quantities_kw=(float(kw),),
            value_per_mwh=float(value),
            submitted_at=_submitted(i),
        )
        for i, (point, isp, kw, value) in enumerate(
            zip(
                cols.request_point.tolist(),
                cols.request_isp.tolist(),
                cols.request_kw.tolist(),
                cols.request_value.tolist(),
                strict=True,
            )
        )
    )
    return OrderBook(
        isps=ISPS,
        isp_hours=ISP_HOURS,
        offers=tuple(offers),
        requests=requests,
        relief=dict(g.relief),
        pricing_rule=PricingRule.PAY_AS_CLEAR,
    )
