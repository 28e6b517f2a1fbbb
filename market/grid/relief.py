"""Network relief factors, pure: which congestion points a kW at a point relieves, and by how much."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from decimal import Decimal
from typing import TypeVar

NodeId = TypeVar("NodeId", bound=Hashable)


class CycleError(ValueError):
    """The parent links do not form a tree."""


def path_to_root(node: NodeId, parents: Mapping[NodeId, NodeId | None]) -> list[NodeId]:
    """``node`` and its ancestors, nearest first. Raises :class:`CycleError` on a loop."""
    path: list[NodeId] = []
    seen: set[NodeId] = set()
    current: NodeId | None = node
    while current is not None:
        if current in seen:
            raise CycleError(f"congestion point {current} is its own ancestor")
        seen.add(current)
        path.append(current)
        current = parents.get(current)
    return path


def relief_factors(
    parents: Mapping[NodeId, NodeId | None],
    sensitivities: Mapping[tuple[NodeId, NodeId], Decimal] | None = None,
) -> dict[tuple[NodeId, NodeId], Decimal]:
    """Relief factor for every (source, target) pair with a non-zero effect.

    Radial rule (MARKET.md, Grid): flexibility at ``source`` relieves ``source`` and every
    ancestor on its path to the root with factor 1.0.

    Meshed rule: if the sensitivity matrix has any row for ``source``, that row replaces the
    radial path for ``source`` entirely: the given factors apply and every other target gets 0.
    Sources without rows keep the radial path. Zero factors are dropped from the result.
    """
    given: dict[NodeId, dict[NodeId, Decimal]] = {}
    for (source, target), factor in (sensitivities or {}).items():
        given.setdefault(source, {})[target] = factor
    factors: dict[tuple[NodeId, NodeId], Decimal] = {}
    for source in parents:
        if source in given:
            for target, factor in given[source].items():
                if factor != 0:
                    factors[(source, target)] = factor
        else:
            for target in path_to_root(source, parents):
                factors[(source, target)] = Decimal(1)
    return factors
