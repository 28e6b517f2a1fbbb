"""Network relief factors over the congestion-point tree (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.grid.relief import CycleError, path_to_root, relief_factors

ONE = Decimal(1)

# root
# +-- a
# |   +-- a1
# |   +-- a2
# +-- b
#     +-- b1
TREE: dict[str, str | None] = {
    "root": None,
    "a": "root",
    "b": "root",
    "a1": "a",
    "a2": "a",
    "b1": "b",
}

RADIAL = {
    ("root", "root"): ONE,
    ("a", "a"): ONE,
    ("a", "root"): ONE,
    ("b", "b"): ONE,
    ("b", "root"): ONE,
    ("a1", "a1"): ONE,
    ("a1", "a"): ONE,
    ("a1", "root"): ONE,
    ("a2", "a2"): ONE,
    ("a2", "a"): ONE,
    ("a2", "root"): ONE,
    ("b1", "b1"): ONE,
    ("b1", "b"): ONE,
    ("b1", "root"): ONE,
}


def test_path_to_root_nearest_first():
    assert path_to_root("a1", TREE) == ["a1", "a", "root"]
    assert path_to_root("root", TREE) == ["root"]


def test_radial_tree_self_and_ancestors_only():
    factors = relief_factors(TREE)
    assert factors == RADIAL
    # siblings and cousins are not relieved
    assert ("a1", "a2") not in factors
    assert ("a1", "b") not in factors
    assert ("a", "a1") not in factors  # a parent does not relieve its children
    assert all(type(f) is Decimal and f == ONE for f in factors.values())


def test_radial_with_empty_sensitivities_is_radial():
    assert relief_factors(TREE, {}) == RADIAL
    assert relief_factors(TREE, None) == RADIAL


def test_matrix_row_replaces_radial_path_for_that_source_only():
    sensitivities = {
        ("a1", "a1"): Decimal("0.8"),
        ("a1", "b"): Decimal("0.25"),
        ("a1", "root"): Decimal("0"),  # dropped
    }
    factors = relief_factors(TREE, sensitivities)

    a1 = {k: v for k, v in factors.items() if k[0] == "a1"}
    assert a1 == {("a1", "a1"): Decimal("0.8"), ("a1", "b"): Decimal("0.25")}
    # the radial ancestors of a1 are gone, not merged
    assert ("a1", "a") not in factors
    assert ("a1", "root") not in factors

    others = {k: v for k, v in factors.items() if k[0] != "a1"}
    assert others == {k: v for k, v in RADIAL.items() if k[0] != "a1"}


def test_matrix_row_of_only_zeros_gives_source_no_entries():
    factors = relief_factors(TREE, {("b1", "b1"): Decimal(0), ("b1", "b"): Decimal("0.000")})
    assert not any(k[0] == "b1" for k in factors)
    assert len(factors) == len(RADIAL) - 3


def test_negative_factor_is_kept():
    factors = relief_factors(TREE, {("a", "b"): Decimal("-0.1")})
    assert factors[("a", "b")] == Decimal("-0.1")
    assert ("a", "a") not in factors


def test_matrix_row_for_unknown_source_is_ignored():
    assert relief_factors(TREE, {("zzz", "root"): Decimal("0.5")}) == RADIAL


def test_two_node_cycle_raises():
    with pytest.raises(CycleError):
        relief_factors({"x": "y", "y": "x"})


def test_self_loop_raises():
    with pytest.raises(CycleError):
        path_to_root("x", {"x": "x"})


def test_cycle_above_a_leaf_raises():
    parents = {"leaf": "x", "x": "y", "y": "z", "z": "x"}
    with pytest.raises(CycleError):
        relief_factors(parents)


def test_cycle_error_is_value_error():
    assert issubclass(CycleError, ValueError)


@st.composite
def random_trees(draw):
    """Parents by index: node i > 0 has a parent with a smaller index, node 0 is the root.

    Returns (parents, depths) where depths are computed while drawing (depth(child) = depth(parent)+1).
    """
    n = draw(st.integers(min_value=1, max_value=40))
    parents: dict[int, int | None] = {0: None}
    depths = [0]
    for i in range(1, n):
        p = draw(st.integers(min_value=0, max_value=i - 1))
        parents[i] = p
        depths.append(depths[p] + 1)
    return parents, depths


@given(random_trees())
def test_random_tree_property(tree):
    parents, depths = tree
    factors = relief_factors(parents)
    assert len(factors) == sum(d + 1 for d in depths)
    assert all(type(f) is Decimal and f == ONE for f in factors.values())
    # every node relieves itself and the root
    for node in parents:
        assert factors[(node, node)] == ONE
        assert factors[(node, 0)] == ONE
