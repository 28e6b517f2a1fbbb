"""Which ISPs must be cleared together.

An ISP is coupled to another only through an offer that spans both and links them:

* a block offer (one activation over its profile, and over its rebound ISPs);
* a storage offer (its state of charge carries from one ISP to the next);
* a divisible offer with a minimum acceptance fraction over several ISPs (one binary for all).

Requests never couple ISPs, and neither do divisible offers without a minimum fraction: each of
their ISPs is an independent choice. ISPs in different components are solved as independent
problems (MARKET.md: ISPs that share no linking constraint can be solved independently).
"""

from __future__ import annotations

from collections.abc import Iterable

from market.clearing.book import Offer


def links_isps(offer: Offer) -> bool:
    return offer.block or offer.storage is not None or offer.min_fraction > 0


def _covered(offer: Offer) -> list[int]:
    isps = [offer.first_isp + j for j, q in enumerate(offer.quantities_kw) if q > 0]
    if offer.block and offer.rebound_first_isp is not None:
        isps += [offer.rebound_first_isp + j for j, q in enumerate(offer.rebound_kw) if q > 0]
    return isps


def isp_components(n_isps: int, offers: Iterable[Offer]) -> list[list[int]]:
    """Partition ``0..n_isps-1`` into groups of ISPs that linking offers tie together (union-find)."""
    parent = list(range(n_isps))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for offer in offers:
        if not links_isps(offer):
            continue
        isps = _covered(offer)
        for other in isps[1:]:
            a, b = find(isps[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n_isps):
        groups.setdefault(find(i), []).append(i)
    return [groups[root] for root in sorted(groups)]
